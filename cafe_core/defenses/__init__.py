"""Defenses by name (method.md section 5): ``adv``, ``trades``, ``mart``, ``awp``, ``help``,
plus the CAFE term that any of them can add.

``build_defense("trades", eps=0.03, steps=10)`` returns a ``Defense``; ``help`` also needs
``std_model``. Unknown names raise ``KeyError`` listing the known ones.
"""
from __future__ import annotations

from torch import nn

from . import adv, awp, help, mart, trades  # noqa: F401  (importing registers the defenses)
from .adv import ADV
from .awp import AWP, WeightPerturbation, perturbed
from .base import DEFENSES, Defense, eval_mode, freeze
from .cafe import CafeTerm, build_cafe
from .cafe_mode import CafeMode
from .help import HELP
from .mart import MART, mart_loss, top_wrong_class
from .trades import KLPGD, TRADES, trades_loss


def build_defense(name: str, eps: float, steps: int = 10, std_model: nn.Module | None = None) -> Defense:
    """Build defense ``name`` (one of ``DEFENSES.names()``) with its method.md defaults.

    Args:
        eps: training attack radius on [0,1] pixels. steps: attack iterations.
        std_model: the standard (non-robust) model; required by ``help``, ignored by the others.
    """
    return DEFENSES.build(name, eps=eps, steps=steps, std_model=std_model)


__all__ = ["ADV", "AWP", "CafeMode", "CafeTerm", "DEFENSES", "Defense", "HELP", "KLPGD", "MART",
           "TRADES", "WeightPerturbation", "build_cafe", "build_defense", "eval_mode", "freeze",
           "mart_loss", "perturbed", "top_wrong_class", "trades_loss"]
