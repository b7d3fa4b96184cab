"""The robustness grid: every defense, baseline vs CAFE vs the h = 0 control, under every attack.

One table users can trust (method.md section 6):

* the same test images, attack seeds and eps for every model (``GridSettings``);
* per-image results kept (resumable state, ``grid_state``), so the grid can be completed over
  several runs and every CAFE-minus-baseline difference gets a paired bootstrap 95% CI
  (``statistics``);
* "worst case over attacks" per image (an image counts only if it survives every attack);
* a gradient-masking check per model (``masking``).

This module runs the grid (``RobustnessGrid``, ``evaluate_grid``) and says whether a saved
result is stale (``grid_stale_reason``); the rows are in ``grid_rows``, the markdown in
``grid_markdown``, the eps curves in ``curves``. Everything returns plain data.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..attacks.inference import fast_queries_enabled
from ..data.datasets import ImageTensors
from ..defenses.cafe_mode import CafeMode
from ..io.checkpoints import CheckpointError, load_backbone, read_card
from ..io.provenance import provenance, repo_relative
from ..io.serialization import atomic_write_text
from .curves import curves_png
from .evaluate import evaluate_attacks
from .grid_markdown import robustness_markdown
from .grid_rows import GridModel, grid_models
from .grid_settings import ATTACK_COLUMNS, COLUMNS, CURVE_MULTIPLIERS, PHASE_ATTACKS, PHASES, GridSettings
from .grid_state import StateFile, prune_candidates, state_path
from .masking import masking_check
from .statistics import claim_check, paired_bootstrap_ci, paired_difference, subset_check, worst_case, worst_vector


class RobustnessGrid:
    """Evaluate the grid of a checkpoint folder; resumable per model, per attack and per batch.

    Args:
        dataset: the test split (the first ``settings.limits[attack]`` images are used per attack).
        eps: the config's radius. settings: seed, budgets and curves (``GridSettings``; default:
            the defaults).
        curve_eps: radii of the curves (default: ``CURVE_MULTIPLIERS`` x eps); an attack with
            ``settings.curve_multipliers`` runs at those radii only, the others stay None (e.g.
            AutoAttack, whose cost grows as eps shrinks).
        state_dir: one JSON per model and checkpoint sha256 with every per-image result (see
            grid_state: a retrained model is evaluated afresh in a file of its own; the old
            results are never deleted by the grid).
    """

    def __init__(self, dataset: ImageTensors, eps: float, settings: GridSettings | None = None, *,
                 curve_eps: Sequence[float] | None = None, state_dir: str | Path | None = None,
                 device: str | torch.device = "cpu", progress: bool = False) -> None:
        self.dataset, self.eps = dataset, float(eps)
        self.settings = settings = settings or GridSettings()
        self.curve_eps = [round(float(e), 6) for e in (curve_eps or [m * eps for m in CURVE_MULTIPLIERS])]
        self.curve_radii = {a: [round(m * self.eps, 6) for m in settings.curve_multipliers[a]]
                            if a in settings.curve_multipliers else list(self.curve_eps)
                            for a in settings.curve_attacks}
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
        settings, out = self.settings, {}
        for attack in attacks:  # one call per attack: each may have its own batch size
            r = evaluate_attacks(model, self.dataset, [attack], eps, settings.seed, settings.batch_size_of(attack),
                                 self.device, {attack: (limit or settings.limits).get(attack, len(self.dataset))},
                                 state, {attack: settings.steps[attack]} if attack in settings.steps else {},
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
                for attack in self.settings.curve_attacks:
                    accs, n_each = [], []
                    for eps in self.curve_eps:
                        if eps not in self.curve_radii[attack]:  # not asked for this attack
                            accs.append(None)
                            n_each.append(0)
                            continue
                        r = self._run(model, [attack], eps, state, self.settings.curve_n, read_only)
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
        size, settings = len(self.dataset), self.settings
        todo = []
        for attack in (a for phase in PHASES if phase != "curves" for a in PHASE_ATTACKS[phase]):
            want = min(settings.limits.get(attack, size), size)
            have = result["n_images"].get(attack, 0)
            if have < want:
                todo.append({"row": label, "attack": attack, "eps": self.eps, "images": have, "of": want})
        for attack in settings.curve_attacks:
            want = min(settings.curve_n.get(attack, size), size)
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
        row: dict[str, Any] = {"defense": model.defense, "cafe": model.mode.to_json(),
                               "checkpoint": repo_relative(model.path),
                               **{c: r["accuracy"].get(c) for c in COLUMNS}, "worst": worst,
                               "n": {**{c: r["n_images"].get(c, 0) for c in COLUMNS}, "worst": n_worst},
                               "square": r["accuracy"].get("square"),
                               "seconds": r["seconds"], "computed_on": r.get("computed_on", {}),
                               "eps_curve": r["curve"]}
        row["masking"] = masking_check({k: v for k, v in r["accuracy"].items() if v is not None}, r["curve"])
        base = results.get(model.baseline.label)
        if model.mode is not CafeMode.BASELINE and base is not None:
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


def grid_result_path(config: dict[str, Any]) -> Path:
    """Where the grid of ``config`` writes its JSON by default: ``benchmarks/results/robustness_<name>.json``."""
    return Path(f"benchmarks/results/robustness_{config.get('name', 'config')}.json")


def grid_state_dir(result_path: str | Path) -> Path:
    """The per-image state folder of a grid result JSON: ``state/<its name>/`` beside it."""
    result_path = Path(result_path)
    return result_path.parent / "state" / result_path.stem


def stale_grid_state(config: dict[str, Any], result_path: str | Path | None = None) -> list[tuple[StateFile, str]]:
    """State files of the grid of ``config`` whose checkpoint no longer exists (another sha256
    now, or no checkpoint for the row), with the reason; nothing is removed here. Refuses (raises
    CheckpointError) when the config has no grid checkpoint at all, which would list everything."""
    path = Path(result_path or grid_result_path(config))
    models = [m for m in grid_models(config["checkpoint_dir"]) if m.path.is_file()]
    if not models:
        raise CheckpointError(f"no defense checkpoints in {config['checkpoint_dir']}: refusing to list "
                              "every state file as stale")
    return prune_candidates(grid_state_dir(path), {m.label: read_card(m.path)["sha256"] for m in models})


def evaluate_grid(config: dict[str, Any], dataset: ImageTensors, settings: GridSettings | None = None, *,
                  phases: Sequence[str] = PHASES, defenses: Iterable[str] | None = None,
                  labels: Iterable[str] | None = None, out: str | Path | None = None,
                  device: str | torch.device = "cpu", progress: bool = False, command: str = "",
                  run_command: str = "", log: Callable[[str], None] = print, **overrides: Any) -> dict[str, Any]:
    """Evaluate every grid checkpoint of ``config`` phase by phase and write the JSON + markdown
    after each model, so an interrupted run leaves a valid, partial (n recorded) result with a
    row for every model. With no ``phases`` it only assembles the JSON from the stored state.
    ``labels`` (e.g. ``defense_adv-cafe``) keeps only those rows: one process per model on a GPU.
    ``settings``: the grid's settings; without them, ``GridSettings.from_recipe(config, **overrides)``
    (overrides: its keyword arguments, e.g. ``steps={"pgd": 3}``). ``command``: the command that
    reproduces every number (``GridSettings.command``); ``run_command``: this run's, if another."""
    if settings is None:
        settings = GridSettings.from_recipe(config, **overrides)
    elif overrides:
        raise TypeError(f"give settings or overrides, not both (got {sorted(overrides)})")
    out = Path(out or grid_result_path(config))
    models = [m for m in grid_models(config["checkpoint_dir"], defenses) if m.path.is_file()]
    if labels is not None:
        wanted = set(labels)
        unknown = wanted - {m.label for m in grid_models(config["checkpoint_dir"], defenses)}
        if unknown:
            raise KeyError(f"unknown grid row(s) {sorted(unknown)}; rows look like defense_adv-cafe")
        models = [m for m in models if m.label in wanted]
    if not models:
        raise CheckpointError(f"no defense checkpoints in {config['checkpoint_dir']}; train the defense stage first")
    grid = RobustnessGrid(dataset, config["eps"], settings, state_dir=grid_state_dir(out), device=device,
                          progress=progress)
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
        result = _grid_result(config, grid, models, results, command, time.perf_counter() - started,
                              {label: sha for label, (_, sha) in loaded.items()}, run_command)
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
    path = Path(result_path or grid_result_path(config))
    if not path.is_file():
        return "no robustness result yet"
    saved = json.loads(path.read_text())
    if not saved.get("complete", False):
        pending = saved.get("pending")
        if pending is None:
            return "result written before completeness was recorded"
        return f"{len(pending)} attack/eps entries still to compute (per-batch state resumes them)"
    expected = {"eps": config["eps"], **GridSettings.from_recipe(config).to_json()}
    changed = sorted(k for k, v in expected.items() if saved.get(k) != v)
    if changed:
        return "[evaluation] settings changed: " + ", ".join(changed)
    rows = {(r["defense"], CafeMode.from_json(r["cafe"])): r.get("sha256") for r in saved.get("rows", [])}
    for model in grid_models(config["checkpoint_dir"]):
        if not model.path.is_file():
            if (model.defense, model.mode) in rows:  # retrained before the grid step: check it again then
                return f"{model.label} has a row but no checkpoint"
            continue
        if (model.defense, model.mode) not in rows:
            return f"no row for {model.label}"
        if rows[(model.defense, model.mode)] != read_card(model.path).get("sha256"):
            return f"{model.label} changed since it was evaluated"
    return None


def _grid_result(config: dict[str, Any], grid: RobustnessGrid, models: Sequence[GridModel],
                 results: dict[str, dict[str, Any]], command: str, seconds: float,
                 shas: dict[str, str], run_command: str = "") -> dict[str, Any]:
    settings = grid.settings
    rows = build_rows(results, models, seed=settings.seed)
    for row, model in zip(rows, [m for m in models if m.label in results]):
        row["sha256"] = shas.get(model.label)
    # What is still to compute, so the pipeline can tell a finished grid from one to resume.
    pending = [item for m in models if m.label in results for item in grid.pending(m.label, results[m.label])]
    versus = None
    if "defense_adv-cafe" in results and "defense_adv-control-h0" in results:
        versus = paired_difference(results["defense_adv-cafe"], results["defense_adv-control-h0"], settings.seed)
    n_images = {c: max((r["n"][c] for r in rows), default=0) for c in COLUMNS}
    # Which machines computed each column's stored batches (over all rows), e.g. a GPU run's.
    computed_on = {c: sorted({h for r in rows for h in r["computed_on"].get(c, [])}) for c in COLUMNS}
    recorded = settings.to_json()
    made = provenance(command)
    return {"config": config.get("name"), "dataset": config["dataset"], "backbone": config["backbone"],
            "eps": config["eps"], "seed": settings.seed, "n_images": n_images, "steps": recorded["steps"],
            "limits": recorded["limits"], "batch_size": settings.batch_size, "batch_sizes": recorded["batch_sizes"],
            "computed_on": {c: h for c, h in computed_on.items() if h},
            "curve_eps": grid.curve_eps, "curve_n": recorded["curve_n"], "curve_attacks": recorded["curve_attacks"],
            "curve_multipliers": recorded["curve_multipliers"], "rows": rows, "claim": claim_check(rows),
            # The same test on the other attack columns (the paper's claim is on AutoAttack only).
            "claim_other_columns": {c: claim_check(rows, c) for c in ("pgd", "cw", "apgd_ce", "apgd_dlr", "worst")
                                    if any(c in r.get("ci95", {}) for r in rows)},
            "square_queries": "compiled" if fast_queries_enabled() else "eager",
            "adv_cafe_minus_control": versus,
            "bootstrap": {"resamples": 2000, "level": 0.95, "paired": True},
            "wall_seconds_this_run": round(seconds, 1), "hardware": made["hardware"], "versions": made["versions"],
            "command": made["command"], "command_this_run": run_command or made["command"],
            "complete": not pending, "pending": pending}
