"""What a result records about its making, one way everywhere: paths relative to the repository (so a
committed JSON or card says the same on every machine: no home folder, no checkout path), the
hardware, the library versions and the command that reproduces it."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]  # cafe_core/io/provenance.py -> the repository


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root (POSIX separators) when it lies inside the
    checkout, e.g. ``checkpoints/fashion_lite``; a path outside it (a dataset folder, a
    temporary folder) is returned absolute. Relative paths are taken from the working directory."""
    absolute = Path(os.path.abspath(path))
    for candidate, root in ((absolute, REPO_ROOT), (absolute.resolve(), REPO_ROOT)):
        if candidate.is_relative_to(root):
            return candidate.relative_to(root).as_posix() or "."
    return absolute.as_posix()


def command_line(program: str | None = None, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces a result, written one way everywhere: ``python <program> <args>``.

    ``program``: ``"-m cafe_core"`` or a script (default: this process's script, repo-relative,
    e.g. ``benchmarks/fast_queries.py``); ``argv``: its arguments (default: this process's)."""
    if program is None:
        program = repo_relative(sys.argv[0]) if sys.argv and sys.argv[0] else "-c"
    return " ".join(["python", program, *(sys.argv[1:] if argv is None else argv)])


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("torchvision", "torchattacks", "safetensors", "numpy", "captum"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions


def cpu_name() -> str:
    """``CPU (<processor>)``, without the thread count."""
    return f"CPU ({platform.processor() or platform.machine()})"


def hardware() -> str:
    """The machine in words: the GPU and how many, or the CPU and torch's thread count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def provenance(command: str | None = None) -> dict[str, Any]:
    """What a result file records about its making: ``hardware`` (the machine), ``versions`` (the
    libraries) and ``command`` (default: ``command_line()`` of this process)."""
    return {"hardware": hardware(), "versions": library_versions(),
            "command": command_line() if command is None else command}
