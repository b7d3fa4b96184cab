"""Checkpoints: safetensors weights plus a JSON card beside them.

``name.safetensors`` holds the weights of one or more modules (keys prefixed by the module
name, e.g. ``model.`` or ``h.``/``g.``); ``name.json`` is the card: dataset, backbone, stage,
parent, full config, metrics, seed, library versions and the sha256 of the weights. Loading
checks the card against the weights and against what the caller asked for.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .provenance import provenance, repo_relative
from .serialization import atomic_write_text, load_tensors, save_tensors, sha256_file

CARD_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match what was asked for."""


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(weights: str | Path, modules: Mapping[str, nn.Module], card: dict[str, Any],
                    dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Write ``modules``' state dicts to ``weights`` and the card beside it (both atomically).

    Args:
        weights: path ending in ``.safetensors``.
        modules: e.g. ``{"model": net}`` or ``{"h": h, "g": g}``.
        card: descriptive fields (stage, dataset, backbone, config, metrics, ...).
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` to halve the size).
    Returns:
        The card as written (with sha256, versions, time).
    """
    weights = Path(weights)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[f"{prefix}.{key}"] = value
    # Both files are staged completely before either replaces its predecessor: a full disk or a
    # read-only folder fails before anything is replaced, so the previous checkpoint stays whole.
    staging = weights.with_name(f".{weights.name}.staging")
    card_staging = weights.with_name(f".{card_path(weights).name}.staging")
    try:
        save_tensors(staging, tensors, {"format": "cafe-lab", "modules": ",".join(modules)})
        full = _full_card(card, weights, sha256_file(staging), modules, dtype)
        atomic_write_text(card_staging, json.dumps(full, indent=2, sort_keys=True) + "\n")
        os.replace(staging, weights)
        os.replace(card_staging, card_path(weights))
    except OSError as err:
        raise OSError(err.errno, f"cannot write checkpoint {weights.name} in {weights.parent}: "
                                 f"{err.strerror or err}; the previous checkpoint is unchanged") from err
    finally:
        staging.unlink(missing_ok=True)
        card_staging.unlink(missing_ok=True)
    return full


def _full_card(card: dict[str, Any], weights: Path, sha256: str, modules: Mapping[str, nn.Module],
               dtype: torch.dtype | None) -> dict[str, Any]:
    full = dict(card)
    made = provenance(card.get("command", ""))
    full.update({
        "card_version": CARD_VERSION,
        "weights": weights.name,
        "sha256": sha256,
        "modules": list(modules),
        "storage_dtype": str(dtype or "as trained").replace("torch.", ""),
        "versions": made["versions"],
        "hardware": card.get("hardware", made["hardware"]),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return full


def parent_record(path: Path, card: dict[str, Any]) -> dict[str, Any]:
    """How a card names its parent: path, sha256 of the weights, stage and metrics."""
    return {"path": repo_relative(path), "sha256": sha256_file(path), "stage": card["stage"],
            "backbone": card["backbone"], "metrics": card.get("metrics", {})}


def read_card(weights: str | Path) -> dict[str, Any]:
    """Read the card beside ``weights`` (clear errors when missing or not JSON)."""
    path = card_path(weights)
    if not path.is_file():
        raise CheckpointError(f"card {path.name} is missing beside {Path(weights).name}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"card {path.name} is not valid JSON: {err}") from err
    if not isinstance(card, dict):
        raise CheckpointError(f"card {path.name} is not a JSON object")
    return card


def load_checkpoint(weights: str | Path, expect: Mapping[str, Any] | None = None
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Load and verify a checkpoint.

    Args:
        weights: the ``.safetensors`` file.
        expect: card fields that must match, e.g. ``{"backbone": "lite", "stage": "adv"}``.
    Returns:
        ``(state dicts by module name, card)``.
    Raises:
        CheckpointError naming the first mismatch (missing card, sha256, expected field).
    """
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint not found: {weights}")
    card = read_card(weights)
    digest = sha256_file(weights)
    if card.get("sha256") != digest:
        raise CheckpointError(f"{weights.name}: sha256 {digest[:12]}... does not match its card "
                              f"({str(card.get('sha256'))[:12]}...): the file was changed or truncated")
    for key, value in (expect or {}).items():
        if card.get(key) != value:
            raise CheckpointError(f"{weights.name}: card says {key}={card.get(key)!r} but {value!r} was requested")
    try:
        tensors = load_tensors(weights)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in card.get("modules", [])}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix not in states:
            raise CheckpointError(f"{weights.name}: tensor {key!r} belongs to no module named in the card")
        states[prefix][rest] = value
    return states, card


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a message listing missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise CheckpointError(f"{what} does not fit the weights: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_backbone(weights: str | Path, backbone: str | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a backbone from its card and load its weights (eval mode).

    Args:
        backbone: if given, the card's backbone must be this one.
    """
    from ..data.datasets import get_info
    from ..models import create_model

    states, card = load_checkpoint(weights, {"backbone": backbone} if backbone else None)
    if "model" not in states:
        raise CheckpointError(f"{Path(weights).name} holds {list(states)}, not a backbone ('model')")
    info = get_info(card["dataset"])
    model = create_model(card["backbone"], info.channels, info.num_classes, info.mean, info.std)
    load_into(model, states["model"], f"backbone {card['backbone']!r}")
    return model.to(device).eval(), card

