"""``python -m cafe_core evaluate``: one checkpoint under attacks (``--checkpoint``, also under torchrun) or
the robustness grid of a recipe (``--grid``; ``--prune-state`` lists or removes stale grid state)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch

from .common import command_line, names, pairs, setup, setup_ranks


def run(args: argparse.Namespace) -> int:
    if args.grid:
        return evaluate_grid_command(args)
    from .. import distributed

    device = setup_ranks(args)
    try:
        return evaluate_checkpoint(args, device)
    finally:
        distributed.teardown()


def evaluate_checkpoint(args: argparse.Namespace, device: torch.device) -> int:
    """``evaluate --checkpoint``; under torchrun the batches are shared out and rank 0 writes."""
    from .. import distributed
    from ..data.datasets import load_split
    from ..evaluation.evaluate import evaluate_attacks
    from ..io.checkpoints import load_backbone
    from ..io.provenance import provenance, repo_relative
    from ..io.reporting import eval_markdown
    from ..io.serialization import atomic_write_text

    model, card = load_backbone(args.checkpoint, device=device)
    eps = card["eps"] if args.eps is None else args.eps
    attacks = names(args.attacks)
    cfg = card["config"]
    dataset = load_split(card["dataset"], args.split, args.data_root, cfg["n_val"], cfg["seed"], limit=args.n)
    out = Path(args.out or f"benchmarks/results/eval_{card.get('config_name', 'model')}_{card['stage']}.json")
    state = out.with_suffix(".state.json")
    started = time.perf_counter()
    main = distributed.is_main()
    result = evaluate_attacks(model, dataset, attacks, eps, args.seed, args.batch_size or 500, device,
                              pairs(args.limit), state, pairs(args.steps), progress=main and not args.quiet)
    if not main:
        return 0
    made = provenance(command_line())
    report = {"checkpoint": repo_relative(args.checkpoint), "sha256": card["sha256"], "stage": card["stage"],
              "dataset": card["dataset"], "backbone": card["backbone"], "split": args.split, "eps": eps,
              "seed": args.seed, "accuracy": result["accuracy"], "n_images": result["n_images"],
              "steps": pairs(args.steps), "seconds": result["seconds"],
              "wall_seconds_this_run": round(time.perf_counter() - started, 1),
              "versions": made["versions"], "command": made["command"], "hardware": made["hardware"]}
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    table = eval_markdown(report)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    state.unlink(missing_ok=True)
    print(table)
    print(f"wrote {out}")
    return 0


def evaluate_grid_command(args: argparse.Namespace) -> int:
    from ..evaluation.grid_markdown import robustness_markdown
    from ..evaluation.grid_settings import PHASES, GridSettings
    from ..io.config import load_config

    config = load_config(args.grid)
    if args.prune_state:
        return prune_grid_state(config, args)
    device = setup(args)
    phases = names(args.phases)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise SystemExit(f"unknown phase(s) {unknown}; known: {', '.join(PHASES)}")
    defenses = [d.strip() for d in args.defenses.split(",")] if args.defenses else None
    # The recipe's [evaluation] tables are the defaults; flags given here override them per attack.
    settings = GridSettings.from_recipe(config, limits=pairs(args.limit), steps=pairs(args.steps),
                                        curve_n=pairs(args.curve_n), batch_size=args.batch_size,
                                        batch_sizes=pairs(args.attack_batch_size), seed=args.seed,
                                        curve_attacks=names(args.curve_attacks))
    labels = names(args.models) if args.models else None
    result = run_grid(args.grid, config, settings, phases=phases, defenses=defenses, labels=labels, n=args.n,
                      out=args.out, device=device, data_root=args.data_root, progress=not args.quiet)
    print(robustness_markdown(result))
    return 0


def run_grid(recipe: str, config: dict, settings, *, phases: Sequence[str], defenses: Sequence[str] | None = None,
             labels: Sequence[str] | None = None, n: int | None = None, out: str | None = None,
             device: torch.device | str = "cpu", data_root: str | None = None, progress: bool = True) -> dict:
    """The grid of recipe ``recipe`` (its name or .toml path) on its test split (the first ``n``
    images), as ``evaluate --grid`` and the pipeline run it; returns the grid JSON's content."""
    from ..data.datasets import load_split
    from ..evaluation.grid import evaluate_grid

    dataset = load_split(config["dataset"], "test", data_root, config["n_val"], config["seed"], limit=n)
    # The JSON's command computes every number (all phases and rows, state reused); this run's may
    # only have assembled the table or run one phase of one row.
    return evaluate_grid(config, dataset, settings, phases=phases, defenses=defenses, labels=labels, out=out,
                         device=device, progress=progress, command=settings.command(config, n, recipe_name(recipe)),
                         run_command=command_line())


def recipe_name(grid: str) -> str:
    """``--grid`` as a reproducing command names it: a recipe name as given, a .toml path repo-relative."""
    from ..io.provenance import repo_relative

    return repo_relative(grid) if grid.endswith(".toml") else grid


def prune_grid_state(config: dict, args: argparse.Namespace) -> int:
    """``evaluate --grid CONFIG --prune-state [--yes]``: list (and with --yes remove) stale state."""
    from ..evaluation.grid import grid_result_path, grid_state_dir, stale_grid_state
    from ..io.checkpoints import CheckpointError

    out = args.out or grid_result_path(config)
    try:
        stale = stale_grid_state(config, out)
    except CheckpointError as err:
        raise SystemExit(str(err)) from err
    if not stale:
        print(f"nothing to prune: every state file in {grid_state_dir(out)} belongs to a current checkpoint")
        return 0
    for state, reason in stale:
        if args.yes:
            state.path.unlink()
        print(f"{'removed' if args.yes else 'would remove'} {state.path} ({reason})")
    if not args.yes:
        print(f"dry run: {len(stale)} file(s) kept; add --yes to remove them")
    return 0
