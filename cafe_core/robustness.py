"""The robustness grid: every defense, baseline vs CAFE vs the h = 0 control, under every attack.

One table users can trust (method.md section 6, issue "defenses"):

* the same test images, attack seeds and eps for every model;
* per-image results kept (resumable state), so the grid can be completed over several runs and
  every CAFE-minus-baseline difference gets a paired bootstrap 95% confidence interval;
* "worst case over attacks" per image (an image counts only if it survives every attack);
* a gradient-masking check per model: single-step beating iterative, a black-box attack beating
  the white-box ones, robust accuracy not falling as eps grows.

Everything returns plain data (dicts of floats and lists) for the CLI, the app and the tests.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoints import CheckpointError, hardware, library_versions, load_backbone, read_card
from .data import ImageTensors
from .defenses import DEFENSES
from .evaluate import evaluate_attacks
from .grid_state import StateFile, prune_candidates, state_path
from .inference import fast_queries_enabled
from .provenance import repo_relative
from .serialization import atomic_write, atomic_write_text

COLUMNS = ("clean", "fgsm", "pgd", "cw", "apgd_ce", "apgd_dlr", "autoattack")
ATTACK_COLUMNS = COLUMNS[1:]
#: Relative radii of the robust-accuracy-vs-eps curves (x the config's eps); the largest one
#: must drive any honest model close to zero, which is part of the masking check.
CURVE_MULTIPLIERS = (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)
#: Grid evaluation order, breadth first over models, so a cut run leaves balanced partial results.
PHASES = ("fast", "autoattack", "strong", "curves")
PHASE_ATTACKS = {"fast": ("clean", "fgsm", "pgd", "square"), "autoattack": ("autoattack",),
                 "strong": ("cw", "apgd_ce", "apgd_dlr")}
DEFAULT_LIMITS = {"autoattack": 1000, "square": 500}
DEFAULT_CURVE_N = {"pgd": 1000, "autoattack": 100}
DEFAULT_STEPS = {"pgd": 30, "cw": 100, "apgd_ce": 100, "apgd_dlr": 100, "autoattack": 100, "square": 1000}


@dataclass(frozen=True)
class GridModel:
    """One row of the grid: a defense, its CAFE setting and the checkpoint that holds it."""

    defense: str
    cafe: bool | str  # False (baseline), True (CAFE) or "control-h0"
    path: Path

    @property
    def label(self) -> str:
        suffix = {False: "", True: "-cafe"}.get(self.cafe, f"-{self.cafe}")
        return f"defense_{self.defense}{suffix}"


def grid_models(checkpoint_dir: str | Path, defenses: Iterable[str] | None = None) -> list[GridModel]:
    """The 11 grid rows in display order (each defense: baseline, CAFE; ADV also the control)."""
    folder = Path(checkpoint_dir)
    rows = []
    for defense in defenses or ("adv", "trades", "mart", "awp", "help"):
        if defense not in DEFENSES.names():
            raise KeyError(f"unknown defense {defense!r}; known: {', '.join(DEFENSES.names())}")
        modes: list[bool | str] = [False, True] + (["control-h0"] if defense == "adv" else [])
        for mode in modes:
            model = GridModel(defense, mode, folder)
            rows.append(GridModel(defense, mode, folder / f"{model.label}.safetensors"))
    return rows


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
        cafe = {False: cafe_labels[0], True: cafe_labels[1]}.get(row["cafe"], str(row["cafe"]))
        flags = row.get("masking", {}).get("flags", [])
        worst = cell(row, "worst")
        if row.get("worst") is not None:  # rows differ in how many images/attacks their worst case covers
            worst += f" (n {row['n']['worst']})"
        rows.append([row["defense"], cafe, *(cell(row, c) for c in COLUMNS), worst,
                     ", ".join(flags) if flags else "none"])
    return rows


def robustness_markdown(result: dict[str, Any]) -> str:
    """The grid as a markdown table (accuracy %, CI of the difference to the baseline below)."""
    from .reporting import markdown_table

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
                "model on the first batch (cafe_core.inference; batches stored before that option ran eagerly; "
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
                      f"{r['defense'].upper()} {'CAFE' if r['cafe'] is True else r['cafe']} (first {next(iter(r['subset_check'].values()))['n_subset']}"
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
    base_rows = [r for r in result["rows"] if r["cafe"] is True and r.get("ci95")]
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


class RobustnessGrid:
    """Evaluate the grid of a checkpoint folder; resumable per model, per attack and per batch.

    Args:
        dataset: the test split (the first ``limits[attack]`` images are used per attack).
        eps: the config's radius. seed: attack seed (same for every model).
        limits: images per attack (default: all; AutoAttack 1,000; Square 500).
        steps: iterations per attack (defaults: PGD-30, CW/APGD/AutoAttack 100, Square 1,000 queries).
        curve_n: images per curve attack; curve_eps: radii of the curves.
        curve_multipliers: per curve attack, the radii (x eps, a subset of ``CURVE_MULTIPLIERS``) it
            is run at; the others stay None (e.g. AutoAttack, whose cost grows as eps shrinks).
        curve_attacks: attacks of the robust-accuracy-vs-eps curves.
        state_dir: one JSON per model and checkpoint sha256 with every per-image result (see
            grid_state: a retrained model is evaluated afresh in a file of its own; the old
            results are never deleted by the grid).
        batch_sizes: per-attack batch sizes over ``batch_size`` (e.g. AutoAttack in batches of 500,
            ~12 min each on a 2-core CPU, so a run can stop and resume often).
    """

    def __init__(self, dataset: ImageTensors, eps: float, *, seed: int = 0, batch_size: int = 500,
                 limits: dict[str, int] | None = None, steps: dict[str, int] | None = None,
                 curve_n: dict[str, int] | None = None, curve_eps: Sequence[float] | None = None,
                 curve_attacks: Sequence[str] = ("pgd", "autoattack"), state_dir: str | Path | None = None,
                 device: str | torch.device = "cpu", progress: bool = False,
                 batch_sizes: dict[str, int] | None = None,
                 curve_multipliers: dict[str, Sequence[float]] | None = None) -> None:
        self.dataset, self.eps, self.seed, self.batch_size = dataset, float(eps), seed, batch_size
        self.batch_sizes = {a: int(b) for a, b in (batch_sizes or {}).items()}
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.steps = {**DEFAULT_STEPS, **(steps or {})}
        self.curve_n = {**DEFAULT_CURVE_N, **(curve_n or {})}
        self.curve_eps = [round(float(e), 6) for e in (curve_eps or [m * eps for m in CURVE_MULTIPLIERS])]
        self.curve_attacks = tuple(curve_attacks)
        self.curve_multipliers = {a: [float(m) for m in ms] for a, ms in (curve_multipliers or {}).items()}
        self.curve_radii = {a: [round(m * self.eps, 6) for m in self.curve_multipliers[a]]
                            if a in self.curve_multipliers else list(self.curve_eps) for a in self.curve_attacks}
        for attack, radii in self.curve_radii.items():
            if not set(radii) <= set(self.curve_eps):
                raise ValueError(f"curve radii of {attack} {radii} are not on the curves' eps axis {self.curve_eps}")
        self.state_dir = Path(state_dir) if state_dir else None
        self.device = device
        self.progress = progress

    def _state_path(self, label: str, sha256: str) -> Path | None:
        # One file per checkpoint sha256 (see grid_state): another checkpoint of the row gets its
        # own file, and the results of earlier ones stay until the user prunes them.
        return None if self.state_dir is None else state_path(self.state_dir, label, sha256)

    def _run(self, model: nn.Module, attacks: Sequence[str], eps: float, state: Path | None,
             limit: dict[str, int] | None = None, read_only: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attack in attacks:  # one call per attack: each may have its own batch size
            r = evaluate_attacks(model, self.dataset, [attack], eps, self.seed,
                                 self.batch_sizes.get(attack, self.batch_size), self.device,
                                 {attack: (limit or self.limits).get(attack, len(self.dataset))}, state,
                                 {attack: self.steps[attack]} if attack in self.steps else {},
                                 progress=self.progress, read_only=read_only)
            for key, values in r.items():
                out.setdefault(key, {}).update(values)
        return out

    def evaluate_model(self, model: nn.Module, sha256: str, label: str,
                       phases: Sequence[str] = PHASES) -> dict[str, Any]:
        """Per-image results of one model: the requested ``phases`` are computed (or resumed),
        the other phases are read from the state as far as earlier runs got (plain data)."""
        state = self._state_path(label, sha256)
        if state is not None and not state.exists() and phases:  # reading alone writes nothing
            state.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state, json.dumps({"sha256": sha256}))
        out: dict[str, Any] = {"accuracy": {}, "n_images": {}, "correct": {}, "seconds": {}, "computed_on": {},
                               "curve": {"eps": self.curve_eps, "accuracy": {}, "n_images": {}, "n_each": {}}}
        for phase in PHASES:
            read_only = phase not in phases
            if phase == "curves":
                for attack in self.curve_attacks:
                    accs, n_each = [], []
                    for eps in self.curve_eps:
                        if eps not in self.curve_radii[attack]:  # not asked for this attack
                            accs.append(None)
                            n_each.append(0)
                            continue
                        r = self._run(model, [attack], eps, state, self.curve_n, read_only)
                        accs.append(r["accuracy"].get(attack))
                        n_each.append(r["n_images"].get(attack, 0))
                        if attack in r["n_images"]:
                            out["curve"]["n_images"][attack] = r["n_images"][attack]
                    if any(a is not None for a in accs):
                        out["curve"]["accuracy"][attack] = accs
                        out["curve"]["n_each"][attack] = n_each
                continue
            r = self._run(model, PHASE_ATTACKS[phase], self.eps, state, read_only=read_only)
            for key in ("accuracy", "n_images", "correct", "seconds", "computed_on"):
                out[key].update(r[key])
        return out

    def pending(self, label: str, result: dict[str, Any]) -> list[dict[str, Any]]:
        """What the state does not cover yet for one model's ``evaluate_model`` result: each
        attack (and eps-curve point) with fewer images than the grid asks for."""
        size = len(self.dataset)
        todo = []
        for attack in (a for phase in PHASES if phase != "curves" for a in PHASE_ATTACKS[phase]):
            want = min(self.limits.get(attack, size), size)
            have = result["n_images"].get(attack, 0)
            if have < want:
                todo.append({"row": label, "attack": attack, "eps": self.eps, "images": have, "of": want})
        for attack in self.curve_attacks:
            want = min(self.curve_n.get(attack, size), size)
            n_each = result["curve"].get("n_each", {}).get(attack) or [0] * len(self.curve_eps)
            todo += [{"row": label, "attack": attack, "eps": eps, "images": have, "of": want, "curve": True}
                     for eps, have in zip(self.curve_eps, n_each) if have < want and eps in self.curve_radii[attack]]
        return todo


def build_rows(results: dict[str, dict[str, Any]], models: Sequence[GridModel], n_boot: int = 2000,
               seed: int = 0) -> list[dict[str, Any]]:
    """Rows of the robustness JSON from per-model results (``RobustnessGrid.evaluate_model``)."""
    rows = []
    for model in models:
        r = results.get(model.label)
        if r is None:
            continue
        worst, n_worst = worst_case(r["correct"])
        row: dict[str, Any] = {"defense": model.defense, "cafe": model.cafe, "checkpoint": repo_relative(model.path),
                               **{c: r["accuracy"].get(c) for c in COLUMNS}, "worst": worst,
                               "n": {**{c: r["n_images"].get(c, 0) for c in COLUMNS}, "worst": n_worst},
                               "square": r["accuracy"].get("square"),
                               "seconds": r["seconds"], "computed_on": r.get("computed_on", {}),
                               "eps_curve": r["curve"]}
        row["masking"] = masking_check({k: v for k, v in r["accuracy"].items() if v is not None}, r["curve"])
        base = results.get(GridModel(model.defense, False, model.path).label)
        if model.cafe is not False and base is not None:
            differences = paired_difference(r, base, seed, n_boot)
            # Worst case of both over the same attacks (those both have run) on the same images.
            common = [c for c in ATTACK_COLUMNS if r["correct"].get(c) and base["correct"].get(c)]
            n = min(worst_case(r["correct"], common)[1], worst_case(base["correct"], common)[1]) if common else 0
            if n:
                a, b = worst_vector(r["correct"], n, common), worst_vector(base["correct"], n, common)
                differences["worst"] = {"delta": float(np.mean(a) - np.mean(b)),
                                        "ci95": list(paired_bootstrap_ci(a, b, n_boot, seed)), "n": n,
                                        "columns": common}
            row["ci95"] = {c: d["ci95"] for c, d in differences.items()}
            row["delta"] = {c: d["delta"] for c, d in differences.items()}
            subset = subset_check(r, base, differences, seed, n_boot)
            if subset:
                row["subset_check"] = subset
        rows.append(row)
    return rows


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
        if row["cafe"] is not True or column not in row.get("ci95", {}):
            continue
        gain, ci = row["delta"][column], row["ci95"][column]
        clean_drop = -row["delta"].get("clean", 0.0)
        per_defense[row["defense"]] = {"gain": gain, "ci95": ci, "clean_drop": clean_drop,
                                       "holds": gain >= min_gain and ci[0] > 0 and clean_drop <= max_clean_drop}
    control = next((r for r in rows if r["defense"] == "adv" and r["cafe"] == "control-h0"), None)
    cafe = next((r for r in rows if r["defense"] == "adv" and r["cafe"] is True), None)
    versus_control = None
    if control is not None and cafe is not None:
        versus_control = {c: {"cafe_delta": cafe.get("delta", {}).get(c), "control_delta": control.get("delta", {}).get(c)}
                          for c in COLUMNS if c in cafe.get("delta", {}) and c in control.get("delta", {})}
    held = sum(v["holds"] for v in per_defense.values())
    return {"column": column, "per_defense": per_defense, "holds_for": held, "of": len(per_defense),
            "target": "at least 4 of 5 defenses", "met": held >= 4, "adv_cafe_vs_control": versus_control}


def grid_settings(config: dict[str, Any], *, limits: dict[str, int] | None = None,
                  steps: dict[str, int] | None = None, curve_n: dict[str, int] | None = None,
                  batch_size: int | None = None, batch_sizes: dict[str, int] | None = None, seed: int = 0,
                  curve_attacks: Sequence[str] = ("pgd", "autoattack")) -> dict[str, Any]:
    """The grid's settings as its JSON records them: the defaults, then the recipe's [evaluation]
    tables, then per-attack overrides (the CLI's flags). ``evaluate_grid(config, data,
    **grid_settings(config))`` runs the grid as the pipeline does, and ``grid_stale_reason``
    compares a saved JSON with the same settings, so the two cannot drift apart."""
    evaluation = config.get("evaluation", {})
    return {"seed": seed, "batch_size": int(batch_size or evaluation.get("batch_size", 500)),
            "batch_sizes": {a: int(b) for a, b in {**evaluation.get("batch_sizes", {}), **(batch_sizes or {})}.items()},
            "limits": {**DEFAULT_LIMITS, **evaluation.get("limits", {}), **(limits or {})},
            "steps": {**DEFAULT_STEPS, **evaluation.get("steps", {}), **(steps or {})},
            "curve_n": {**DEFAULT_CURVE_N, **evaluation.get("curve_n", {}), **(curve_n or {})},
            "curve_attacks": list(curve_attacks),
            "curve_multipliers": {a: [float(m) for m in ms] for a, ms in evaluation.get("curve_multipliers", {}).items()}}


def grid_state_dir(result_path: str | Path) -> Path:
    """The per-image state folder of a grid result JSON: ``state/<its name>/`` beside it."""
    result_path = Path(result_path)
    return result_path.parent / "state" / result_path.stem


def stale_grid_state(config: dict[str, Any], result_path: str | Path | None = None) -> list[tuple[StateFile, str]]:
    """State files of the grid of ``config`` whose checkpoint no longer exists (another sha256
    now, or no checkpoint for the row), with the reason; nothing is removed here. Refuses (raises
    CheckpointError) when the config has no grid checkpoint at all, which would list everything."""
    path = Path(result_path or f"benchmarks/results/robustness_{config.get('name', 'config')}.json")
    models = [m for m in grid_models(config["checkpoint_dir"]) if m.path.is_file()]
    if not models:
        raise CheckpointError(f"no defense checkpoints in {config['checkpoint_dir']}: refusing to list "
                              "every state file as stale")
    return prune_candidates(grid_state_dir(path), {m.label: read_card(m.path)["sha256"] for m in models})


def evaluate_grid(config: dict[str, Any], dataset: ImageTensors, *, phases: Sequence[str] = PHASES,
                  defenses: Iterable[str] | None = None, labels: Iterable[str] | None = None,
                  out: str | Path | None = None,
                  limits: dict[str, int] | None = None, steps: dict[str, int] | None = None,
                  curve_n: dict[str, int] | None = None, curve_attacks: Sequence[str] = ("pgd", "autoattack"),
                  seed: int = 0, batch_size: int = 500, batch_sizes: dict[str, int] | None = None,
                  curve_multipliers: dict[str, Sequence[float]] | None = None, device: str | torch.device = "cpu", progress: bool = False, command: str = "",
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every grid checkpoint of ``config`` phase by phase and write the JSON + markdown
    after each model, so an interrupted run leaves a valid, partial (n recorded) result with a
    row for every model. With no ``phases`` it only assembles the JSON from the stored state.
    ``labels`` (e.g. ``defense_adv-cafe``) keeps only those rows: one process per model on a GPU."""
    out = Path(out or f"benchmarks/results/robustness_{config.get('name', 'config')}.json")
    state_dir = grid_state_dir(out)
    models = [m for m in grid_models(config["checkpoint_dir"], defenses) if m.path.is_file()]
    if labels is not None:
        wanted = set(labels)
        unknown = wanted - {m.label for m in grid_models(config["checkpoint_dir"], defenses)}
        if unknown:
            raise KeyError(f"unknown grid row(s) {sorted(unknown)}; rows look like defense_adv-cafe")
        models = [m for m in models if m.label in wanted]
    if not models:
        raise CheckpointError(f"no defense checkpoints in {config['checkpoint_dir']}; train the defense stage first")
    grid = RobustnessGrid(dataset, config["eps"], seed=seed, batch_size=batch_size, limits=limits, steps=steps,
                          curve_n=curve_n, curve_attacks=curve_attacks, state_dir=state_dir, device=device,
                          progress=progress, batch_sizes=batch_sizes, curve_multipliers=curve_multipliers)
    results: dict[str, dict[str, Any]] = {}
    loaded: dict[str, tuple[nn.Module, str]] = {}
    for model_ref in models:
        model, card = load_backbone(model_ref.path, device=device)
        if abs(card["eps"] - config["eps"]) > 1e-9:
            raise CheckpointError(f"{model_ref.path.name} was trained at eps {card['eps']}, config says {config['eps']}")
        loaded[model_ref.label] = (model, card["sha256"])
        # Every model's finished results first (read from the state, nothing computed), so a run
        # cut in any phase still writes a JSON with every row.
        results[model_ref.label] = grid.evaluate_model(model, card["sha256"], model_ref.label, phases=())
    started = time.perf_counter()

    def write() -> dict[str, Any]:
        result = _grid_result(config, grid, models, results, seed, command, time.perf_counter() - started,
                              {label: sha for label, (_, sha) in loaded.items()})
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), robustness_markdown(result) + "\n")
        return result

    result = write()
    for index, phase in enumerate(phases):
        for model_ref in models:
            model, sha = loaded[model_ref.label]
            t0 = time.perf_counter()
            # Phases not yet reached in this run are read from the state only (nothing computed).
            results[model_ref.label] = grid.evaluate_model(model, sha, model_ref.label, phases[:index + 1])
            log(f"[{phase}] {model_ref.label}: {time.perf_counter() - t0:.0f} s")
            result = write()
        curves_png(result, out.with_name(out.stem + "_curves.png"))
    if not phases:
        curves_png(result, out.with_name(out.stem + "_curves.png"))
    return result


def grid_stale_reason(config: dict[str, Any], result_path: str | Path | None = None) -> str | None:
    """Why the grid of ``config`` must (re)run, or None when its result JSON is complete (nothing
    pending), was assembled with the recipe's [evaluation] settings (as the pipeline runs it) and
    has a row for every grid checkpoint with that checkpoint's sha256. Reads JSON and cards only."""
    path = Path(result_path or f"benchmarks/results/robustness_{config.get('name', 'config')}.json")
    if not path.is_file():
        return "no robustness result yet"
    saved = json.loads(path.read_text())
    if not saved.get("complete", False):
        pending = saved.get("pending")
        if pending is None:
            return "result written before completeness was recorded"
        return f"{len(pending)} attack/eps entries still to compute (per-batch state resumes them)"
    expected = {"eps": config["eps"], **grid_settings(config)}
    changed = sorted(k for k, v in expected.items() if saved.get(k) != v)
    if changed:
        return "[evaluation] settings changed: " + ", ".join(changed)
    rows = {(r["defense"], r["cafe"]): r.get("sha256") for r in saved.get("rows", [])}
    for model in grid_models(config["checkpoint_dir"]):
        if not model.path.is_file():
            if (model.defense, model.cafe) in rows:  # retrained before the grid step: check it again then
                return f"{model.label} has a row but no checkpoint"
            continue
        if (model.defense, model.cafe) not in rows:
            return f"no row for {model.label}"
        if rows[(model.defense, model.cafe)] != read_card(model.path).get("sha256"):
            return f"{model.label} changed since it was evaluated"
    return None


def curves_png(result: dict[str, Any], path: str | Path) -> Path | None:
    """Robust accuracy vs eps for every row (PGD solid, AutoAttack dashed), as a PNG for the README.
    Returns None when no curve has been measured yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in result["rows"] if r.get("eps_curve", {}).get("accuracy")]
    if not rows:
        return None
    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    colours = {"adv": "#4c78a8", "trades": "#f58518", "mart": "#54a24b", "awp": "#b279a2", "help": "#e45756"}
    for row in rows:
        curve = row["eps_curve"]
        style = {False: ":", True: "-"}.get(row["cafe"], "-.")
        label = row["defense"].upper() + {False: "", True: "+CAFE"}.get(row["cafe"], f" {row['cafe']}")
        for attack, marker in (("pgd", "o"), ("autoattack", "s")):
            values = curve["accuracy"].get(attack)
            if values:
                ax.plot([255 * e for e in curve["eps"][:len(values)]], [float("nan") if v is None else 100 * v for v in values], style,
                        marker=marker, markersize=3, color=colours.get(row["defense"], "grey"),
                        label=f"{label} {'PGD' if attack == 'pgd' else 'AA'}")
    n = rows[0]["eps_curve"].get("n_images", {})
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


def _grid_result(config, grid: RobustnessGrid, models, results, seed, command, seconds,
                 shas: dict[str, str]) -> dict[str, Any]:
    rows = build_rows(results, models, seed=seed)
    for row, model in zip(rows, [m for m in models if m.label in results]):
        row["sha256"] = shas.get(model.label)
    # What is still to compute, so the pipeline can tell a finished grid from one to resume.
    pending = [item for m in models if m.label in results for item in grid.pending(m.label, results[m.label])]
    versus = None
    if "defense_adv-cafe" in results and "defense_adv-control-h0" in results:
        versus = paired_difference(results["defense_adv-cafe"], results["defense_adv-control-h0"], seed)
    n_images = {c: max((r["n"][c] for r in rows), default=0) for c in COLUMNS}
    # Which machines computed each column's stored batches (over all rows), e.g. a GPU run's.
    computed_on = {c: sorted({h for r in rows for h in r["computed_on"].get(c, [])}) for c in COLUMNS}
    return {"config": config.get("name"), "dataset": config["dataset"], "backbone": config["backbone"],
            "eps": config["eps"], "seed": seed, "n_images": n_images, "steps": grid.steps, "limits": grid.limits,
            "batch_size": grid.batch_size, "batch_sizes": grid.batch_sizes, "computed_on": {c: h for c, h in computed_on.items() if h},
            "curve_eps": grid.curve_eps, "curve_n": grid.curve_n, "curve_attacks": list(grid.curve_attacks),
            "curve_multipliers": grid.curve_multipliers, "rows": rows, "claim": claim_check(rows),
            # The same test on the other attack columns (the paper's claim is on AutoAttack only).
            "claim_other_columns": {c: claim_check(rows, c) for c in ("pgd", "cw", "apgd_ce", "apgd_dlr", "worst")
                                    if any(c in r.get("ci95", {}) for r in rows)},
            "square_queries": "compiled" if fast_queries_enabled() else "eager",
            "adv_cafe_minus_control": versus,
            "bootstrap": {"resamples": 2000, "level": 0.95, "paired": True},
            "wall_seconds_this_run": round(seconds, 1), "hardware": hardware(), "versions": library_versions(),
            "command": command, "complete": not pending, "pending": pending}
