"""The robustness grid as markdown: the table (one row per grid row, CI of row - baseline in
brackets) and the sentences under it (settings, completeness, the paper's claim, the subset check,
ADV-CAFE vs the h = 0 control, verdicts in plain words). Reads the grid JSON only."""
from __future__ import annotations

from typing import Any, Sequence

from ..defenses.cafe_mode import CafeMode
from .grid_settings import COLUMNS
from .names import cafe_setting


def table_cells(result: dict[str, Any], cafe_labels: tuple[str, str]) -> list[list[str]]:
    """One row of text cells per grid row: defense, CAFE setting (``cafe_labels`` for
    baseline/CAFE), each column as "accuracy % [CI of row - baseline, points]", worst, masking."""

    def cell(row: dict, column: str) -> str:
        value = row.get(column)
        if value is None:
            return "-"
        text = f"{100 * value:.2f}"
        ci = row.get("ci95", {}).get(column)
        if ci is not None:
            text += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
        return text

    rows = []
    for row in result["rows"]:
        cafe = cafe_setting(row["cafe"], *cafe_labels)
        flags = row.get("masking", {}).get("flags", [])
        worst = cell(row, "worst")
        if row.get("worst") is not None:  # rows differ in how many images/attacks their worst case covers
            worst += f" (n {row['n']['worst']})"
        rows.append([row["defense"], cafe, *(cell(row, c) for c in COLUMNS), worst,
                     ", ".join(flags) if flags else "none"])
    return rows


def robustness_markdown(result: dict[str, Any]) -> str:
    """The grid as a markdown table (accuracy %, CI of the difference to the baseline below)."""
    from ..io.reporting import markdown_table

    header = ["defense", "CAFE", *COLUMNS, "worst", "masking"]
    rows = table_cells(result, ("no", "yes"))
    n = result["n_images"]
    lines = [f"Robust accuracy (%) on {result['dataset']} test images, eps = {result['eps']:.4f}, seed {result['seed']}. "
             "Brackets: paired bootstrap 95% CI of (row - its baseline), points. Worst: each image must survive "
             "every attack the row has run, on its first n images; its CI compares a row with its baseline over the "
             "attacks both have run.",
             "Images per column: " + ", ".join(f"{c} {n.get(c, 0)}" for c in COLUMNS) + ".",
             "Iterations: " + ", ".join(f"{c} {result['steps'][c]}" for c in COLUMNS if c in result.get("steps", {}))
             + " (AutoAttack: APGD-CE, APGD-T, FAB-T at that many iterations, then Square 5,000 queries)."
             + (" Square's queries go through a compiled, weight-frozen copy of each model when it matches the "
                "model on the first batch (cafe_core.attacks.inference; batches stored before that option ran eagerly; "
                "benchmarks/fast_queries.py compares both on the same images)."
                if result.get("square_queries") == "compiled" else ""),
             *(["Computed on: " + "; ".join(f"{', '.join(cols)}: {where}" for where, cols in _by_machine(result["computed_on"]).items())
                + ". The JSON's \"hardware\" is the machine that assembled this table."] if result.get("computed_on") else []),
             *([_pending_line(result["pending"])] if "pending" in result else []),
             "",
             markdown_table(header, rows)]
    claim = result.get("claim")
    if claim and claim["per_defense"]:
        lines += ["", f"Paper's claim on {claim['column']} (CAFE - baseline >= 1 point, CI above zero, clean drop "
                      f"<= 1 point): holds for {claim['holds_for']} of {claim['of']} defenses measured "
                      f"(target: {claim['target']}): "
                  + "; ".join(f"{d.upper()} {100 * v['gain']:+.2f} [{100 * v['ci95'][0]:+.2f}, {100 * v['ci95'][1]:+.2f}]"
                              f"{' holds' if v['holds'] else ''}" for d, v in claim["per_defense"].items()) + "."]
    others = {c: v for c, v in (result.get("claim_other_columns") or {}).items() if v["per_defense"]}
    if others:
        lines += ["", "The same test on the other columns (not the paper's claim; n per column above): " + "; ".join(
            f"{c}: holds for {v['holds_for']} of {v['of']}, gains "
            + ", ".join(f"{d.upper()} {100 * g['gain']:+.2f}{'*' if g['ci95'][0] > 0 else ''}" for d, g in v["per_defense"].items())
            for c, v in others.items()) + " (* CI above zero)."]
    subsets = [r for r in result["rows"] if r.get("subset_check")]
    if subsets:
        lines += ["", "Is AutoAttack's subset representative? Row - baseline on AutoAttack's images vs on all images, "
                  "points [95% CI]: " + " ".join(
                      f"{r['defense'].upper()} {cafe_setting(r['cafe'], with_cafe='CAFE')} (first {next(iter(r['subset_check'].values()))['n_subset']}"
                      f" / all {next(iter(r['subset_check'].values()))['n_all']}): "
                      + ", ".join(f"{c} {100 * v['delta_subset']:+.2f} [{100 * v['ci95_subset'][0]:+.1f}, {100 * v['ci95_subset'][1]:+.1f}]"
                                  f" / {100 * v['delta_all']:+.2f} [{100 * v['ci95_all'][0]:+.1f}, {100 * v['ci95_all'][1]:+.1f}]"
                                  for c, v in r["subset_check"].items()) + "." for r in subsets)
                  + " Where the subset's differences exceed those on all images, so may the AutoAttack difference."]
    versus = result.get("adv_cafe_minus_control")
    if versus:
        lines += ["", "ADV-CAFE minus the h = 0 control (same images, paired 95% CI, points): "
                  + "; ".join(f"{c} {100 * v['delta']:+.2f} [{100 * v['ci95'][0]:+.2f}, {100 * v['ci95'][1]:+.2f}] (n {v['n']})"
                              for c, v in versus.items()) + "."]
        lines += ["", "In plain words: " + " ".join(
            f"{c}: {verdict(v['ci95'], 'ADV-CAFE', 'the h = 0 control')}." for c, v in versus.items() if c != "clean")]
    base_rows = [r for r in result["rows"] if CafeMode.from_json(r["cafe"]) is CafeMode.CAFE and r.get("ci95")]
    if base_rows:
        lines += ["", "CAFE vs its own baseline, in plain words: " + " ".join(
            f"{r['defense'].upper()} on {c}: {verdict(r['ci95'][c], 'CAFE', 'the baseline')}."
            for r in base_rows for c in ("pgd", "autoattack") if c in r["ci95"])]
    return "\n".join(lines)


def _pending_line(pending: list[dict[str, Any]]) -> str:
    """One sentence: the grid is complete, or what its state does not cover yet."""
    if not pending:
        return "Complete: every column and eps-curve point has all its images."
    grouped: dict[str, list[str]] = {}
    for item in pending:
        what = f"{item['attack']}{' curve' if item.get('curve') else ''} at eps {item['eps']:g}"
        grouped.setdefault(what, []).append(
            f"{item['row'].removeprefix('defense_')} {item['images']}/{item['of']}")
    return ("Still to compute (images done/asked; the same command resumes): "
            + "; ".join(f"{what}: {', '.join(rows)}" for what, rows in grouped.items()) + ".")


def _by_machine(computed_on: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{column: [machines]}`` regrouped as ``{"machine A + machine B": [columns]}``."""
    grouped: dict[str, list[str]] = {}
    for column, machines in computed_on.items():
        grouped.setdefault(" + ".join(machines), []).append(column)
    return grouped


def verdict(ci: Sequence[float], a: str, b: str) -> str:
    """A plain sentence for a paired 95% CI of (a - b)."""
    if ci[0] > 0:
        return f"{a} is better (CI above zero)"
    if ci[1] < 0:
        return f"{b} is better (CI below zero)"
    return f"no difference can be claimed (CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} points includes zero)"

