"""``python -m cafe_core pipeline``: every stage of a recipe in order (see ``cafe_core.training.pipeline``); its analysis
and evaluation steps run the ``analyze`` and ``evaluate --grid`` commands with the recipe's settings."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import command_line, names, setup


def run(args: argparse.Namespace) -> int:
    from ..io.config import load_config
    from ..training.pipeline import pipeline_steps, run_pipeline, stale_reason
    from . import build_parser
    from .analyze import run as run_analyze
    from .evaluate import evaluate_grid_command

    device = setup(args)
    config = load_config(args.config)
    if args.dry_run:
        for step in pipeline_steps(config):
            print(f"{step.name:28s} {stale_reason(config, step) or 'up to date'}")
        return 0
    common = (["--threads", str(args.threads)] if args.threads else []) + (["--quiet"] if args.quiet else []) + \
        (["--data-root", args.data_root] if args.data_root else []) + (["--device", args.device] if args.device else [])
    folder = Path(config["checkpoint_dir"])
    analysis = config.get("analysis", {})
    evaluation = config.get("evaluation", {})

    def analyze() -> None:
        argv = ["analyze", "--amr", str(folder / "amr.safetensors"), "--attack", analysis.get("attack", "pgd"),
                "--steps", str(analysis.get("steps", 20)), "--inversion-steps", str(analysis.get("inversion_steps", 3))]
        run_analyze(build_parser().parse_args(argv + common))

    def evaluate() -> None:
        argv = ["evaluate", "--grid", args.config]
        for flag, table in (("--limit", "limits"), ("--steps", "steps"), ("--curve-n", "curve_n")):
            for key, value in evaluation.get(table, {}).items():
                argv += [flag, f"{key}={value}"]
        evaluate_grid_command(build_parser().parse_args(argv + common))

    started = time.perf_counter()
    records = run_pipeline(config, only=names(args.only), skip=names(args.skip), device=device,
                           progress=not args.quiet, command=command_line(), data_root=args.data_root,
                           run_analysis=analyze, run_evaluation=evaluate)
    for record in records:
        print(f"{record['step']:28s} {record['action']:8s} {record['seconds']:8.0f} s  {record['reason']}")
    print(f"pipeline: {time.perf_counter() - started:.0f} s")
    return 0
