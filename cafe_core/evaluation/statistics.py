"""Statistics of the robustness grid: paired bootstrap confidence intervals, the worst case over
attacks, row-minus-baseline differences, the AutoAttack subset check and the paper's claim.

All of it works on per-image 0/1 lists (1: the image was classified correctly) of models that
saw the same images, so every difference is paired: the shared difficulty of an image cancels.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..defenses.cafe_mode import CafeMode
from .grid_settings import ATTACK_COLUMNS, COLUMNS


def paired_bootstrap_ci(row: Sequence[int], base: Sequence[int], n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(row) - mean(base) over the same images (paired).

    Images are resampled with replacement, the same resample for both models, so the shared
    difficulty of an image cancels and only disagreements between the models count.
    """
    a, b = np.asarray(row, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired bootstrap needs two equal, non-empty per-image lists, got {a.size} and {b.size}")
    diff = a - b
    rng = np.random.default_rng(seed)
    # Resampling in chunks keeps memory at ~100 MB even for 10,000 images x 2,000 resamples.
    means = []
    for start in range(0, n_boot, 200):
        idx = rng.integers(0, diff.size, size=(min(200, n_boot - start), diff.size))
        means.append(diff[idx].mean(axis=1))
    boot = np.concatenate(means)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def worst_case(correct: dict[str, Sequence[int]], columns: Sequence[str] = ATTACK_COLUMNS) -> tuple[float | None, int]:
    """Accuracy when each image must survive every attack in ``columns``, on the images all of
    them evaluated (the first ``min(n)``). Returns ``(accuracy, n)``; ``(None, 0)`` if none ran."""
    lengths = [len(correct[c]) for c in columns if correct.get(c)]
    if not lengths:
        return None, 0
    n = min(lengths)
    return float(np.mean(worst_vector(correct, n, columns))), n


def worst_vector(correct: dict[str, Sequence[int]], n: int, columns: Sequence[str] = ATTACK_COLUMNS) -> list[int]:
    """Per image (first ``n``): 1 if it survived every attack of ``columns`` that ran, else 0."""
    survived = np.ones(n, dtype=bool)
    for column in columns:
        if correct.get(column):
            survived &= np.asarray(correct[column][:n], dtype=bool)
    return survived.astype(int).tolist()


def paired_difference(a: dict[str, Any], b: dict[str, Any], seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Per column: mean(a) - mean(b) with its paired bootstrap CI, on the images both evaluated."""
    out = {}
    for column in COLUMNS:
        x, y = a["correct"].get(column), b["correct"].get(column)
        if x and y:
            n = min(len(x), len(y))
            out[column] = {"delta": float(np.mean(x[:n]) - np.mean(y[:n])),
                           "ci95": list(paired_bootstrap_ci(x[:n], y[:n], n_boot, seed)), "n": n}
    return out


def subset_check(row: dict[str, Any], base: dict[str, Any], differences: dict[str, Any], seed: int = 0,
                 n_boot: int = 2000, columns: Sequence[str] = ("pgd", "cw", "apgd_ce", "apgd_dlr")
                 ) -> dict[str, Any]:
    """Is AutoAttack's image subset representative? For each white-box column measured on more
    images than AutoAttack, (row - baseline) on AutoAttack's images (the first n) next to the same
    difference on all of that column's images. A subset gain that vanishes on all images means
    the AutoAttack difference, measured on the subset only, should be read with that in mind."""
    n = min(len(row["correct"].get("autoattack") or []), len(base["correct"].get("autoattack") or []))
    out = {}
    for column in columns:
        if not n or column not in differences or differences[column]["n"] <= n:
            continue
        a, b = row["correct"][column][:n], base["correct"][column][:n]
        out[column] = {"n_subset": n, "delta_subset": float(np.mean(a) - np.mean(b)),
                       "ci95_subset": list(paired_bootstrap_ci(a, b, n_boot, seed)),
                       "n_all": differences[column]["n"], "delta_all": differences[column]["delta"],
                       "ci95_all": differences[column]["ci95"]}
    return out


def claim_check(rows: Sequence[dict[str, Any]], column: str = "autoattack", min_gain: float = 0.01,
                max_clean_drop: float = 0.01) -> dict[str, Any]:
    """The paper's claim on this grid: CAFE beats its fair baseline on ``column`` by at least
    ``min_gain`` with a CI above zero, losing at most ``max_clean_drop`` clean accuracy."""
    per_defense = {}
    for row in rows:
        if CafeMode.from_json(row["cafe"]) is not CafeMode.CAFE or column not in row.get("ci95", {}):
            continue
        gain, ci = row["delta"][column], row["ci95"][column]
        clean_drop = -row["delta"].get("clean", 0.0)
        per_defense[row["defense"]] = {"gain": gain, "ci95": ci, "clean_drop": clean_drop,
                                       "holds": gain >= min_gain and ci[0] > 0 and clean_drop <= max_clean_drop}
    control, cafe = (next((r for r in rows if r["defense"] == "adv" and CafeMode.from_json(r["cafe"]) is mode), None)
                     for mode in (CafeMode.CONTROL_H0, CafeMode.CAFE))
    versus_control = None
    if control is not None and cafe is not None:
        versus_control = {c: {"cafe_delta": cafe.get("delta", {}).get(c), "control_delta": control.get("delta", {}).get(c)}
                          for c in COLUMNS if c in cafe.get("delta", {}) and c in control.get("delta", {})}
    held = sum(v["holds"] for v in per_defense.values())
    return {"column": column, "per_defense": per_defense, "holds_for": held, "of": len(per_defense),
            "target": "at least 4 of 5 defenses", "met": held >= 4, "adv_cafe_vs_control": versus_control}

