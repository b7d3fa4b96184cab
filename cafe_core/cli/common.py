"""Helpers shared by the ``python -m cafe_core`` commands (one module per command in ``cafe_core.cli``, each
with ``run(args) -> int``; ``cafe_core.cli`` itself only parses the command line and dispatches):"""
from __future__ import annotations

import argparse
from typing import Sequence

import torch


def command_line() -> str:
    """The command as typed, recorded in cards and results so every number can be reproduced."""
    from ..io.provenance import command_line as reproducing

    return reproducing("-m cafe_core")


def pairs(items: Sequence[str]) -> dict[str, int]:
    """``["pgd=20", "autoattack=100"]`` -> ``{"pgd": 20, "autoattack": 100}`` (flags given as ATTACK=N)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected ATTACK=N, got {item!r}")
        out[key.strip()] = int(value)
    return out


def names(text: str) -> list[str]:
    """A comma list of names, blanks dropped: ``"a, b,"`` -> ``["a", "b"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def setup(args: argparse.Namespace) -> torch.device:
    """Torch threads (``--threads``) and the device (``--device``; default: cuda if present)."""
    from ..training.trainer import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def setup_ranks(args: argparse.Namespace) -> torch.device:
    """``setup`` for commands that run under torchrun: joins its process group when there is one
    and returns this rank's device (``cuda:LOCAL_RANK``); without torchrun the same as ``setup``."""
    from .. import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    return distributed.init(args.device)
