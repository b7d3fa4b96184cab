"""Where per-image results are kept: one JSON state file per grid row and checkpoint sha256.

A state folder (``benchmarks/results/state/<result name>/``) holds, per row label:

* ``<label>.json``: the first checkpoint the row was evaluated with;
* ``<label>@<sha256[:12]>.json``: any other checkpoint of that row (retrained, replaced), beside it.

Every file records its checkpoint's full ``sha256``. Reading never deletes, moves or rewrites a
state file, so restoring an earlier checkpoint finds its results again. Results of checkpoints
that no longer exist stay on disk until ``prune_candidates`` lists them and the user removes them
(``python -m cafe_core evaluate --grid CONFIG --prune-state [--yes]``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

SEPARATOR = "@"
SHA_CHARS = 12


@dataclass(frozen=True)
class StateFile:
    """One state file: its row label, the checkpoint sha256 it records (None if unreadable)."""

    path: Path
    label: str
    sha256: str | None


def stored_sha256(path: Path) -> str | None:
    """The checkpoint sha256 recorded in a state file (None if missing, unreadable or unrecorded)."""
    try:
        value = json.loads(path.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def find_state(state_dir: str | Path, label: str, sha256: str) -> Path | None:
    """The existing state file of row ``label`` for the checkpoint ``sha256``, or None."""
    folder = Path(state_dir)
    for path in (folder / f"{label}.json", folder / f"{label}{SEPARATOR}{sha256[:SHA_CHARS]}.json"):
        if path.is_file() and stored_sha256(path) == sha256:
            return path
    return None


def state_path(state_dir: str | Path, label: str, sha256: str) -> Path:
    """Where the state of row ``label`` for checkpoint ``sha256`` is (or will be) kept: its
    existing file, else ``<label>.json`` if the row has none yet, else ``<label>@<sha12>.json``.
    Nothing is created or removed here."""
    found = find_state(state_dir, label, sha256)
    if found is not None:
        return found
    folder = Path(state_dir)
    plain = folder / f"{label}.json"
    if not plain.exists():
        return plain
    keyed = folder / f"{label}{SEPARATOR}{sha256[:SHA_CHARS]}.json"
    if keyed.exists():  # 12 hex digits shared by two checkpoints of one row: refuse to mix them
        raise FileExistsError(f"{keyed} holds the state of another checkpoint ({stored_sha256(keyed)}), "
                              f"not of {sha256}")
    return keyed


def state_files(state_dir: str | Path) -> list[StateFile]:
    """Every state file of a folder (sorted by name), with its row label and sha256."""
    folder = Path(state_dir)
    if not folder.is_dir():
        return []
    return [StateFile(path, path.stem.split(SEPARATOR, 1)[0], stored_sha256(path))
            for path in sorted(folder.glob("*.json"))]


def current_state_files(state_dir: str | Path, shas: Mapping[str, str]) -> dict[str, Path]:
    """``{label: state file}`` for the checkpoints ``shas`` (``{label: sha256}``) that have one."""
    found = {label: find_state(state_dir, label, sha) for label, sha in shas.items()}
    return {label: path for label, path in found.items() if path is not None}


def prune_candidates(state_dir: str | Path, shas: Mapping[str, str]) -> list[tuple[StateFile, str]]:
    """State files of checkpoints that no longer exist, with the reason: the row's checkpoint now
    has another sha256, or the row has no checkpoint. ``shas``: ``{label: sha256}`` of every
    current checkpoint. Lists only; removing them is the caller's (the user's) decision."""
    out = []
    for state in state_files(state_dir):
        current = shas.get(state.label)
        if current is None:
            out.append((state, "no checkpoint for this row"))
        elif state.sha256 != current:
            recorded = state.sha256[:SHA_CHARS] if state.sha256 else "none"
            out.append((state, f"checkpoint {recorded} replaced by {current[:SHA_CHARS]}"))
    return out
