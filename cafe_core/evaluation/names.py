"""Plain names for the networks of a checkpoint set, written once for the app, reports, tables and figures.

A checkpoint is named by its file stem (``standard``, ``adv``, ``defense_trades-cafe``); people
read "undefended network" or "TRADES + CAFE". A ``cafe`` argument is a ``CafeMode`` or any of its
encodings (a robustness JSON row's false / true / "control-h0", a card's None / "cafe").
"""
from __future__ import annotations

from typing import Any

from ..defenses.cafe_mode import CafeMode

DEFENSE_TITLES = {"adv": "ADV", "trades": "TRADES", "mart": "MART", "awp": "AWP", "help": "HELP"}
NETWORK_NAMES = {"standard": "undefended network", "adv": "robust network (adversarial training)"}
CAFE_SUFFIX = {CafeMode.BASELINE: "", CafeMode.CAFE: " + CAFE", CafeMode.CONTROL_H0: " + CAFE with h = 0 (control)"}
#: Short suffixes of the eps-curve legend ("ADV+CAFE", "ADV control-h0").
SHORT_SUFFIX = {CafeMode.BASELINE: "", CafeMode.CAFE: "+CAFE", CafeMode.CONTROL_H0: " control-h0"}


def defense_name(defense: str, cafe: Any) -> str:
    """``("trades", True)`` -> "TRADES + CAFE"; ``("none", False)`` -> "no defense (undefended network)"."""
    if defense == "none":
        return f"no defense ({NETWORK_NAMES['standard']})"
    return DEFENSE_TITLES.get(defense, defense.upper()) + CAFE_SUFFIX[CafeMode.parse(cafe)]


def short_defense_name(defense: str, cafe: Any) -> str:
    """A compact name for legends: ``("adv", True)`` -> "ADV+CAFE", control -> "ADV control-h0"."""
    return defense.upper() + SHORT_SUFFIX[CafeMode.parse(cafe)]


def cafe_setting(cafe: Any, baseline: str = "no", with_cafe: str = "yes") -> str:
    """The "CAFE" column of a grid table: ``baseline`` / ``with_cafe`` / "control-h0"."""
    mode = CafeMode.parse(cafe)
    return {CafeMode.BASELINE: baseline, CafeMode.CAFE: with_cafe}.get(mode, mode.value)


def network_name(label: str) -> str:
    """Plain name of a checkpoint stem: ``standard``, ``adv`` or ``defense_<defense>[-cafe|-control-h0]``."""
    from .grid_rows import GridRow

    if label in NETWORK_NAMES:
        return NETWORK_NAMES[label]
    try:
        row = GridRow.from_label(label)
    except ValueError:
        return label
    return defense_name(row.defense, row.mode)
