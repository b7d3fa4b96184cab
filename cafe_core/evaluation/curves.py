"""Robust accuracy vs eps of the grid's rows: the series computed once (``curve_series``), drawn
by two thin renderers: ``curves_png`` (matplotlib, the README's PNG) here and
``figures.robustness_curves`` (plotly, the app). Both draw the same points in the same order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..defenses.cafe_mode import CafeMode
from ..io.serialization import atomic_write

#: The curves' attacks in drawing order, with their short legend names.
CURVE_ATTACKS = (("pgd", "PGD"), ("autoattack", "AA"))
DEFENSE_COLOURS = {"adv": "#4c78a8", "trades": "#f58518", "mart": "#54a24b", "awp": "#b279a2", "help": "#e45756"}
#: One look for both renderers: colour per defense, line style per CAFE mode (matplotlib, plotly),
#: marker per attack (matplotlib, plotly).
MODE_DASHES = {CafeMode.BASELINE: (":", "dot"), CafeMode.CAFE: ("-", "solid"), CafeMode.CONTROL_H0: ("-.", "dashdot")}
ATTACK_MARKERS = {"pgd": ("o", "circle"), "autoattack": ("s", "square")}


@dataclass(frozen=True)
class CurveSeries:
    """One line: a grid row under one attack; ``accuracy`` in % (None: not measured at that radius)."""

    defense: str
    mode: CafeMode
    attack: str
    eps_255: list[float]
    accuracy: list[float | None]


def curve_series(result: dict[str, Any]) -> list[CurveSeries]:
    """Every measured curve of a robustness JSON, row by row (PGD before AutoAttack)."""
    series = []
    for row in result.get("rows", []):
        curve = row.get("eps_curve") or {}
        for attack, _ in CURVE_ATTACKS:
            values = curve.get("accuracy", {}).get(attack)
            if values:
                series.append(CurveSeries(row["defense"], CafeMode.from_json(row["cafe"]), attack,
                                          [255 * e for e in curve["eps"][:len(values)]],
                                          [None if v is None else 100 * v for v in values]))
    return series


def curves_png(result: dict[str, Any], path: str | Path) -> Path | None:
    """The curves as a PNG for the README: colour per defense, line style per CAFE mode (baseline
    dotted, CAFE solid, control dash-dot), marker per attack. None when no curve is measured yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .names import short_defense_name

    series = curve_series(result)
    if not series:
        return None
    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    names = dict(CURVE_ATTACKS)
    for line in series:
        ax.plot(line.eps_255, [float("nan") if v is None else v for v in line.accuracy], MODE_DASHES[line.mode][0],
                marker=ATTACK_MARKERS[line.attack][0], markersize=3, color=DEFENSE_COLOURS.get(line.defense, "grey"),
                label=f"{short_defense_name(line.defense, line.mode)} {names[line.attack]}")
    first = next(r for r in result["rows"] if r.get("eps_curve", {}).get("accuracy"))
    n = first["eps_curve"].get("n_images", {})
    ax.set_xlabel("eps (/255)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(f"{result['dataset']} {result['backbone']}: robust accuracy vs eps "
                 f"(PGD on {n.get('pgd', '?')} images" + (f", AA on {n['autoattack']}" if "autoattack" in n else "") + ")",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: FigureCanvasAgg(fig).print_png(tmp))
    return path
