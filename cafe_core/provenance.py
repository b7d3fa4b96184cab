"""How results name files: relative to the repository, so a committed JSON or card says the same
on every machine (no home folder, no checkout path)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root (POSIX separators) when it lies inside the
    checkout, e.g. ``checkpoints/fashion_lite``; a path outside it (a dataset folder, a
    temporary folder) is returned absolute. Relative paths are taken from the working directory."""
    absolute = Path(os.path.abspath(path))
    for candidate, root in ((absolute, REPO_ROOT), (absolute.resolve(), REPO_ROOT)):
        if candidate.is_relative_to(root):
            return candidate.relative_to(root).as_posix() or "."
    return absolute.as_posix()
