"""Is the grid's AutoAttack budget (10 iterations) as strong as Croce & Hein's (100)? Image by image.

The robustness grid runs standard AutoAttack with torchattacks' budget ([evaluation] steps): APGD-CE,
APGD-T and FAB-T with 10 iterations, then Square with 5,000 queries. Croce & Hein's standard
AutoAttack gives APGD-CE, APGD-T and FAB-T 100 iterations. This runs that budget on the first N test
images of some grid rows (per-batch, resumable state under
benchmarks/results/state/autoattack_budget_<config>/, keyed by each checkpoint's sha256), reads the
grid's own results for the same images from the grid's state (nothing is recomputed there) and
reports per row: both accuracies, the images only one budget breaks, the paired bootstrap 95% CI of
(stronger - grid), and for a CAFE or control row whose baseline is measured too, row - baseline under
each budget. If the stronger budget moved the differences, the grid's AutoAttack column would mislead.

    python benchmarks/autoattack_budget.py --config fashion_lite --rows defense_adv,defense_adv-cafe --n 200 --threads 2

Writes benchmarks/results/autoattack_budget_<config>.json + .md (rewritten after every row, so a cut
run leaves the rows it finished).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from cafe_core.data.datasets import load_split
from cafe_core.defenses.cafe_mode import CafeMode
from cafe_core.evaluation.grid import RobustnessGrid
from cafe_core.evaluation.grid_rows import grid_models
from cafe_core.evaluation.grid_settings import GridSettings
from cafe_core.evaluation.grid_state import find_state
from cafe_core.evaluation.statistics import paired_bootstrap_ci
from cafe_core.io.checkpoints import load_backbone
from cafe_core.io.config import load_config
from cafe_core.io.provenance import provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def grid_results(model, label: str, sha256: str, test, config: dict[str, Any], settings: GridSettings,
                 n: int) -> list[int]:
    """The grid's per-image AutoAttack verdicts on the first ``n`` images, read from its state."""
    state_dir = ROOT / "benchmarks" / "results" / "state" / f"robustness_{config['name']}"
    if find_state(state_dir, label, sha256) is None:
        raise SystemExit(f"no grid state for the current {label} checkpoint in {state_dir}: run the grid first")
    grid = RobustnessGrid(test, config["eps"], settings, state_dir=state_dir)
    correct = grid.evaluate_model(model, sha256, label, phases=())["correct"].get("autoattack", [])
    if len(correct) < n:
        raise SystemExit(f"the grid has AutoAttack on {len(correct)} images of {label}, fewer than --n {n}")
    return correct


def stronger_results(model, label: str, sha256: str, test, config: dict[str, Any], settings: GridSettings,
                     n: int, steps: int, batch_size: int, state_dir: Path) -> tuple[list[int], float]:
    """AutoAttack with ``steps`` iterations on the first ``n`` images, through the grid's own
    resumable state (keyed by the checkpoint's sha256) in ``state_dir``."""
    stronger = GridSettings.from_recipe(seed=settings.seed, batch_size=batch_size, limits={"autoattack": n},
                                        steps={"autoattack": steps})
    grid = RobustnessGrid(test, config["eps"], stronger, state_dir=state_dir)
    r = grid.evaluate_model(model, sha256, label, phases=("autoattack",))
    return r["correct"]["autoattack"], r["seconds"]["autoattack"]


def difference(a: list[int], b: list[int]) -> dict[str, Any]:
    """mean(a) - mean(b) over the same images with its paired bootstrap CI."""
    return {"delta": (sum(a) - sum(b)) / len(a), "ci95": list(paired_bootstrap_ci(a, b))}


def points(d: dict[str, Any]) -> str:
    return f"{100 * d['delta']:+.2f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"


def markdown(result: dict[str, Any]) -> str:
    steps, grid_steps = result["steps"], result["grid_steps"]
    table = markdown_table(
        ["row", f"AA-{grid_steps} (grid) %", f"AA-{steps} %", f"broken only by AA-{steps}",
         f"broken only by AA-{grid_steps}", f"AA-{steps} - AA-{grid_steps} [95% CI], points", f"AA-{steps} seconds"],
        [[r["row"], f"{100 * r['grid_accuracy']:.2f}", f"{100 * r['accuracy']:.2f}", r["broken_only_by_stronger"],
          r["broken_only_by_grid"], points(r["stronger_minus_grid"]), f"{r['seconds']:.0f}"] for r in result["rows"]])
    lines = [f"Standard AutoAttack (APGD-CE, APGD-T, FAB-T, then Square 5,000 queries) with {grid_steps} iterations "
             f"(the grid's budget, read from its state) and with {steps}"
             + (" (Croce & Hein's standard budget), " if steps == 100 else ", ") +
             f"on the same first {result['n_images']} test images ({result['config']}, eps {result['eps']}, "
             f"seed {result['seed']}; AA-{steps} on {result['hardware']}).", "", table]
    for p in result["pairs"]:
        lines += ["", f"{p['row']} - {p['baseline']}: AA-{grid_steps} {points(p['grid'])}, AA-{steps} "
                      f"{points(p['stronger'])} (points, paired 95% CI)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The command line above (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_lite")
    parser.add_argument("--rows", default="defense_adv,defense_adv-cafe", help="comma list of grid rows")
    parser.add_argument("--n", type=int, default=200, help="first N test images")
    parser.add_argument("--steps", type=int, default=100, help="iterations of APGD-CE, APGD-T and FAB-T")
    parser.add_argument("--batch-size", type=int, default=100, help="images per resumable batch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/autoattack_budget_"
                        "<config>.json); its state folder is state/<its name> beside it")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    settings = GridSettings.from_recipe(config)
    test = load_split(config["dataset"], "test", None, config["n_val"], config["seed"], download=False, limit=args.n)
    by_label = {m.label: m for m in grid_models(config["checkpoint_dir"])}
    labels = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [label for label in labels if label not in by_label]
    if unknown:
        raise SystemExit(f"unknown grid row(s) {unknown}; rows look like defense_adv-cafe")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"autoattack_budget_{config['name']}.json"
    state_dir = out.parent / "state" / out.stem
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, tuple[list[int], list[int]]] = {}
    started = time.perf_counter()
    for label in labels:
        model, card = load_backbone(by_label[label].path, device=args.device)
        grid = grid_results(model, label, card["sha256"], test, config, settings, args.n)
        strong, seconds = stronger_results(model, label, card["sha256"], test, config, settings, args.n, args.steps,
                                           args.batch_size, state_dir)
        verdicts[label] = (grid, strong)
        rows.append({"row": label, "sha256": card["sha256"], "grid_accuracy": sum(grid) / len(grid),
                     "accuracy": sum(strong) / len(strong), "seconds": seconds,
                     "broken_only_by_stronger": sum(g and not s for g, s in zip(grid, strong)),
                     "broken_only_by_grid": sum(s and not g for g, s in zip(grid, strong)),
                     "stronger_minus_grid": difference(strong, grid)})
        pairs = []
        for row in verdicts:  # CAFE / control rows whose baseline is measured too
            model_ref = by_label[row]
            baseline = model_ref.baseline.label
            if model_ref.mode is not CafeMode.BASELINE and baseline in verdicts:
                pairs.append({"row": row, "baseline": baseline,
                              "grid": difference(verdicts[row][0], verdicts[baseline][0]),
                              "stronger": difference(verdicts[row][1], verdicts[baseline][1])})
        result = {"config": config["name"], "eps": config["eps"], "seed": settings.seed, "n_images": args.n,
                  "steps": args.steps, "grid_steps": settings.steps["autoattack"], "batch_size": args.batch_size,
                  "rows": rows, "pairs": pairs, "bootstrap": {"resamples": 2000, "level": 0.95, "paired": True},
                  "threads": torch.get_num_threads(), "wall_seconds_this_run": round(time.perf_counter() - started, 1),
                  **provenance()}
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), markdown(result) + "\n")
        print(f"{label}: AA-{result['grid_steps']} {100 * rows[-1]['grid_accuracy']:.2f}%, "
              f"AA-{args.steps} {100 * rows[-1]['accuracy']:.2f}% ({seconds:.0f} s)", flush=True)
    print(markdown(result))


if __name__ == "__main__":
    main()
