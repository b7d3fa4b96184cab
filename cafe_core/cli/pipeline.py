"""``python -m cafe_core pipeline``: every stage of a recipe in order (see ``cafe_core.training.pipeline``); its
analysis and evaluation steps call what the ``analyze`` and ``evaluate --grid`` commands call, with the
recipe's settings."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import command_line, names, setup


def run(args: argparse.Namespace) -> int:
    from ..causal.study import StudySettings, write_study
    from ..evaluation.grid_markdown import robustness_markdown
    from ..evaluation.grid_settings import PHASES, GridSettings
    from ..io.config import load_config
    from ..io.reporting import causal_markdown
    from ..training.pipeline import pipeline_steps, run_pipeline, stale_reason
    from .evaluate import run_grid

    device = setup(args)
    config = load_config(args.config)
    if args.dry_run:
        for step in pipeline_steps(config):
            print(f"{step.name:28s} {stale_reason(config, step) or 'up to date'}")
        return 0
    analysis = config.get("analysis", {})

    def analyze() -> None:
        settings = StudySettings(attack=analysis.get("attack", "pgd"), steps=analysis.get("steps", 20),
                                 inversion_steps=analysis.get("inversion_steps", 3))
        result, _ = write_study(Path(config["checkpoint_dir"]) / "amr.safetensors", settings, device=device,
                                data_root=args.data_root, progress=not args.quiet, command=command_line())
        print(causal_markdown(result))

    def evaluate() -> None:
        # The recipe's [evaluation] tables are GridSettings' defaults: nothing to pass on.
        result = run_grid(args.config, config, GridSettings.from_recipe(config), phases=PHASES, device=device,
                          data_root=args.data_root, progress=not args.quiet)
        print(robustness_markdown(result))

    started = time.perf_counter()
    records = run_pipeline(config, only=names(args.only), skip=names(args.skip), device=device,
                           progress=not args.quiet, command=command_line(), data_root=args.data_root,
                           run_analysis=analyze, run_evaluation=evaluate)
    for record in records:
        print(f"{record['step']:28s} {record['action']:8s} {record['seconds']:8.0f} s  {record['reason']}")
    print(f"pipeline: {time.perf_counter() - started:.0f} s")
    return 0
