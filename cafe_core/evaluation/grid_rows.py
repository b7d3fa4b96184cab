"""The rows of the robustness grid, listed once: each defense as a baseline and with CAFE, and ADV
also with the h = 0 control. The pipeline trains these rows and the grid evaluates them; a row's
``label`` is its checkpoint's file stem (``defense_trades-cafe``) and its state file's name."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..defenses.cafe_mode import CafeMode

GRID_DEFENSES = ("adv", "trades", "mart", "awp", "help")
LABEL_PREFIX = "defense_"


@dataclass(frozen=True)
class GridRow:
    """One row of the grid: a defense and how it uses the CAFE term."""

    defense: str
    mode: CafeMode

    @property
    def label(self) -> str:
        """File stem of the row's checkpoint: ``defense_adv``, ``defense_adv-cafe``, ``defense_adv-control-h0``."""
        return f"{LABEL_PREFIX}{self.defense}{self.mode.suffix}"

    @classmethod
    def from_label(cls, label: str) -> GridRow:
        """The row of a label (``defense_<defense>[-cafe|-control-h0]``); ValueError otherwise."""
        if not label.startswith(LABEL_PREFIX):
            raise ValueError(f"not a grid row label: {label!r} (rows look like defense_adv-cafe)")
        defense, sep, suffix = label[len(LABEL_PREFIX):].partition("-")
        return cls(defense, CafeMode.from_suffix(suffix))

    @property
    def baseline(self) -> GridRow:
        """The row this one is compared with: the same defense without CAFE."""
        return GridRow(self.defense, CafeMode.BASELINE)


@dataclass(frozen=True)
class GridModel(GridRow):
    """A grid row and the checkpoint that holds (or will hold) it."""

    path: Path


def grid_rows(defenses: Iterable[str] | None = None) -> list[GridRow]:
    """The grid's rows in display order (each defense: baseline, CAFE; ADV also the h = 0 control);
    ``defenses`` keeps only those (a ``DEFENSES`` name each)."""
    from ..defenses import DEFENSES

    rows = []
    for defense in defenses or GRID_DEFENSES:
        if defense not in DEFENSES.names():
            raise KeyError(f"unknown defense {defense!r}; known: {', '.join(DEFENSES.names())}")
        modes = [CafeMode.BASELINE, CafeMode.CAFE] + ([CafeMode.CONTROL_H0] if defense == "adv" else [])
        rows += [GridRow(defense, mode) for mode in modes]
    return rows


def grid_models(checkpoint_dir: str | Path, defenses: Iterable[str] | None = None) -> list[GridModel]:
    """``grid_rows`` with each row's checkpoint ``<checkpoint_dir>/<label>.safetensors`` (which may not exist)."""
    folder = Path(checkpoint_dir)
    return [GridModel(row.defense, row.mode, folder / f"{row.label}.safetensors") for row in grid_rows(defenses)]
