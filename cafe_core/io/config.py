"""Recipes as small TOML files in ``configs/`` (comments explain each choice).

``load_config("fashion_lite")`` reads ``configs/fashion_lite.toml``; a path works too.
Overrides use dotted keys with TOML values: ``stages.adv.epochs=1``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Iterable

from .provenance import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


def config_path(name: str | Path) -> Path:
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    candidate = CONFIG_DIR / f"{name}.toml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise FileNotFoundError(f"unknown config {str(name)!r}; known: {known}")
    return candidate


def apply_override(config: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in place; value is parsed as TOML (``1``, ``0.1``, ``"pgd"``, ``true``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override must look like key.sub=value, got {override!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words such as pgd
    node = config
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part!r} is not a table")
    node[parts[-1]] = value


def load_config(name: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a recipe and apply overrides; adds ``name`` (the file stem) if missing."""
    path = config_path(name)
    with open(path, "rb") as handle:
        config = tomllib.load(handle)
    config.setdefault("name", path.stem)
    for override in overrides:
        apply_override(config, override)
    return config


def stage_config(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The settings of one stage merged over the recipe's top-level values (dataset, eps, seed...).

    Other tables (e.g. ``[analysis]``) are left out, so editing them never makes a trained
    stage look out of date.
    """
    stages = config.get("stages", {})
    if stage not in stages:
        raise KeyError(f"config {config.get('name')!r} has no [stages.{stage}] table; has {sorted(stages)}")
    merged = {k: copy.deepcopy(v) for k, v in config.items() if not isinstance(v, dict)}
    merged.update(copy.deepcopy(stages[stage]))
    merged["stage"] = stage
    return merged


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object (used to match resume files and cards to configs)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
