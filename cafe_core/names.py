"""Plain names for the networks of a checkpoint set, written once for the app, reports and figures.

A checkpoint is named by its file stem (``standard``, ``adv``, ``defense_trades-cafe``); people
read "undefended network" or "TRADES + CAFE".
"""
from __future__ import annotations

DEFENSE_TITLES = {"adv": "ADV", "trades": "TRADES", "mart": "MART", "awp": "AWP", "help": "HELP"}
NETWORK_NAMES = {"standard": "undefended network", "adv": "robust network (adversarial training)"}
CAFE_SUFFIX = {False: "", True: " + CAFE", "control-h0": " + CAFE with h = 0 (control)"}


def defense_name(defense: str, cafe: bool | str) -> str:
    """``("trades", True)`` -> "TRADES + CAFE"; ``("none", False)`` -> "no defense (undefended network)"."""
    if defense == "none":
        return f"no defense ({NETWORK_NAMES['standard']})"
    return DEFENSE_TITLES.get(defense, defense.upper()) + CAFE_SUFFIX.get(cafe, f" ({cafe})")


def network_name(label: str) -> str:
    """Plain name of a checkpoint stem: ``standard``, ``adv`` or ``defense_<defense>[-cafe|-control-h0]``."""
    if label in NETWORK_NAMES:
        return NETWORK_NAMES[label]
    if label.startswith("defense_"):
        defense, _, mode = label[len("defense_"):].partition("-")
        return defense_name(defense, {"": False, "cafe": True}.get(mode, mode))
    return label
