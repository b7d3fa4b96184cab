"""Signs that a model's robustness is gradient masking rather than real (Athalye et al. 2018;
Carlini et al. 2019), checked on every grid row."""
from __future__ import annotations

from typing import Any


def masking_check(accuracy: dict[str, float], curve: dict[str, Any] | None = None,
                  tolerance: float = 0.02, zero_level: float = 0.1) -> dict[str, Any]:
    """Signs of gradient masking (Athalye et al. 2018; Carlini et al. 2019), as named flags.

    * ``fgsm_beats_pgd``: one gradient step finds more errors than 30 (iterative must be stronger);
    * ``blackbox_beats_whitebox``: gradient-free Square beats every gradient attack;
    * ``not_decreasing_with_eps``: a curve's accuracy rises with eps by more than ``tolerance``;
    * ``large_eps_not_near_zero``: at the largest radius the gradient attack leaves more than
      ``zero_level`` accuracy (an unbounded-enough attack should break any classifier).
    """
    flags: list[str] = []
    white = [accuracy[c] for c in ("pgd", "cw", "apgd_ce", "apgd_dlr") if c in accuracy]
    if "fgsm" in accuracy and "pgd" in accuracy and accuracy["fgsm"] < accuracy["pgd"] - tolerance:
        flags.append("fgsm_beats_pgd")
    if "square" in accuracy and white and accuracy["square"] < min(white) - tolerance:
        flags.append("blackbox_beats_whitebox")
    for attack, values in (curve or {}).get("accuracy", {}).items():
        points = [v for v in values if v is not None]
        if any(later > earlier + tolerance for earlier, later in zip(points, points[1:])):
            flags.append(f"not_decreasing_with_eps:{attack}")
        if values and values[-1] is not None and values[-1] > zero_level:
            flags.append(f"large_eps_not_near_zero:{attack}")
    return {"flags": flags, "suspicious": bool(flags), "tolerance": tolerance}

