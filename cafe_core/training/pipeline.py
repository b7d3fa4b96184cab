"""``python -m cafe_core pipeline``: every stage of a recipe, in order, skipping what is done.

standard -> ADV -> AMR-GMM -> 5 defenses x {baseline, CAFE} + the h = 0 control -> causal
analysis -> robustness grid. A training stage is skipped when its checkpoint and card match the
recipe (every setting of the stage, and the sha256 of each input checkpoint); an interrupted stage
resumes from its ``.resume.safetensors``; the evaluation keeps per-batch state. One progress bar
per stage (the trainer's) and one overall bar whose ETA is weighted by each stage's cost.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from ..defenses.cafe_mode import CafeMode
from ..evaluation.grid import grid_stale_reason
from ..evaluation.grid_rows import GridRow, grid_rows
from ..io.checkpoints import read_card, sha256_file
from ..io.config import stage_config
from .stages import PARENT_STAGE, run_stage

#: Cost of one training image-pass relative to a clean step, per defense (measured with
#: benchmarks/defense_step_speed.py: AWP and HELP add forward/backward passes).
DEFENSE_COST = {"adv": 1.0, "trades": 1.1, "mart": 1.1, "awp": 1.3, "help": 1.5}


@dataclass(frozen=True)
class Step:
    """One pipeline step: a training stage (the defense stage: of one grid row), analysis or evaluation."""

    kind: str  # "train", "analysis" or "evaluation"
    stage: str | None = None
    row: GridRow | None = None  # the defense stage's grid row

    @property
    def name(self) -> str:
        if self.kind != "train":
            return self.kind
        return self.row.label if self.row is not None else str(self.stage)

    @property
    def defense(self) -> str | None:
        return self.row.defense if self.row is not None else None

    @property
    def mode(self) -> CafeMode:
        return self.row.mode if self.row is not None else CafeMode.BASELINE


def pipeline_steps(config: dict[str, Any]) -> list[Step]:
    """The recipe's steps in order (only stages the config defines)."""
    stages = config.get("stages", {})
    steps = [Step("train", s) for s in ("standard", "adv", "amr") if s in stages]
    if "defense" in stages:
        steps += [Step("train", "defense", row) for row in grid_rows()]
    if "amr" in stages:
        steps.append(Step("analysis"))
    if "defense" in stages:
        steps.append(Step("evaluation"))
    return steps


def _output(config: dict[str, Any], step: Step) -> Path:
    return Path(config["checkpoint_dir"]) / f"{step.name}.safetensors"


def _inputs(config: dict[str, Any], step: Step) -> dict[str, Path]:
    """The checkpoints a training step reads, by the card field that records them."""
    folder = Path(config["checkpoint_dir"])
    inputs = {}
    if step.stage in PARENT_STAGE:
        inputs["parent"] = folder / f"{PARENT_STAGE[step.stage]}.safetensors"
    if step.stage == "defense" and step.mode.adds_term:
        inputs["amr"] = folder / "amr.safetensors"
    if step.defense == "help":
        inputs["std_model"] = folder / "standard.safetensors"
    return inputs


def stale_reason(config: dict[str, Any], step: Step) -> str | None:
    """Why ``step`` must run, or None when its output matches the recipe and its inputs."""
    if step.kind == "evaluation":
        return grid_stale_reason(config)
    if step.kind == "analysis":
        result = Path("benchmarks/results") / f"causal_{config.get('name')}.json"
        amr = _output(config, Step("train", "amr"))
        if not result.is_file() or not amr.is_file():
            return "no analysis result yet"
        saved = json.loads(result.read_text())
        if saved.get("sha256") != read_card(amr).get("sha256"):
            return "the AMR-GMM checkpoint changed since the analysis"
        eps_inv = config.get("analysis", {}).get("eps_inv")
        if eps_inv is not None and abs(saved.get("inversion", {}).get("eps_inv", -1) - eps_inv) > 1e-12:
            return "eps_inv changed in [analysis]"
        return None
    out = _output(config, step)
    if not out.is_file():
        return "no checkpoint"
    try:
        card = read_card(out)
    except Exception as error:  # a missing or unreadable card means the stage must be redone
        return f"unreadable card ({error})"
    if not card.get("complete", False):
        return "checkpoint incomplete"
    expected = stage_config(config, step.stage)
    if step.stage == "defense":
        expected.update(defense=step.defense, cafe=step.mode.to_card())
    changed = sorted(k for k, v in expected.items() if card.get("config", {}).get(k) != v)
    if changed:
        return "recipe changed: " + ", ".join(changed)
    for field, path in _inputs(config, step).items():
        recorded = (card.get(field) or {}).get("sha256")
        if not path.is_file():
            return f"input {path.name} missing"
        if recorded != sha256_file(path):
            return f"input {path.name} changed since this checkpoint was trained"
    return None


def step_cost(config: dict[str, Any], step: Step) -> float:
    """Relative cost (image x forward/backward passes) used to weight the overall ETA."""
    if step.kind == "analysis":
        return 10_000 * 30.0
    if step.kind == "evaluation":
        return 10_000 * 250.0
    cfg = stage_config(config, step.stage)
    images = cfg.get("train_limit") or 55_000
    passes = {"standard": 1, "adv": 2}.get(step.stage, cfg.get("steps", 10) + 1)
    if step.stage == "defense":
        passes *= DEFENSE_COST[step.defense]
        if step.mode.adds_term:
            passes += cfg.get("inversion_steps", 10) + 2
    return float(cfg["epochs"] * images * passes)


def run_pipeline(config: dict[str, Any], *, only: Sequence[str] | None = None, skip: Sequence[str] = (),
                 device: Any = None, progress: bool = True, command: str = "", data_root: str | None = None,
                 run_analysis: Callable[[], None] | None = None, run_evaluation: Callable[[], None] | None = None,
                 log: Callable[[str], None] = tqdm.write) -> list[dict[str, Any]]:
    """Run the recipe's steps in order; returns one record per step (name, action, reason, seconds).

    Args:
        only / skip: step names (``standard``, ``defense_trades-cafe``, ``analysis``, ``evaluation``,
            or a kind such as ``train``) to restrict to or leave out.
        run_analysis / run_evaluation: callables for the two non-training steps (the CLI passes
            its ``analyze`` and ``evaluate --grid`` commands, so the pipeline and the commands agree).
    """
    steps = [s for s in pipeline_steps(config)
             if (not only or s.name in only or s.kind in only) and s.name not in skip and s.kind not in skip]
    costs = [step_cost(config, s) for s in steps]
    records = []
    bar = tqdm(total=sum(costs), desc="pipeline", unit="u", disable=not progress, position=0,
               bar_format="{l_bar}{bar}| stage {postfix} [{elapsed}<{remaining}]")
    for step, cost in zip(steps, costs):
        bar.set_postfix_str(step.name)
        reason = stale_reason(config, step)
        started = time.perf_counter()
        if reason is None:
            records.append({"step": step.name, "action": "skipped", "reason": "up to date", "seconds": 0.0})
            log(f"[pipeline] {step.name}: up to date, skipped")
            bar.total -= cost  # a skipped step must not make the ETA look faster than it is
            bar.refresh()
            continue
        log(f"[pipeline] {step.name}: running ({reason})")
        if step.kind == "train":
            run_stage(config, step.stage, device=device, progress=progress, command=command, data_root=data_root,
                      defense=step.defense, cafe=step.mode)
        elif step.kind == "analysis" and run_analysis is not None:
            run_analysis()
        elif step.kind == "evaluation" and run_evaluation is not None:
            run_evaluation()
        seconds = round(time.perf_counter() - started, 1)
        records.append({"step": step.name, "action": "ran", "reason": reason, "seconds": seconds})
        log(f"[pipeline] {step.name}: done in {seconds:.0f} s")
        bar.update(cost)
    bar.close()
    return records
