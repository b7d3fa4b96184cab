"""Standard AutoAttack with Square's queries eager vs through the compiled copy (cafe_core.attacks.inference).

Runs the grid's AutoAttack (same steps, batch size and per-batch seeding as
``evaluate --grid``) twice on the first N test images of one checkpoint: once with every
query through the eager model (CAFE_FAST_QUERIES=0), once through the compiled, weight-frozen
copy. Reports both robust accuracies, how many images got a different verdict and the time of
each run, so the speed-up and the agreement are measured on the same images.

    python benchmarks/fast_queries.py --config fashion_lite --checkpoint defense_adv --n 100 --threads 2

Writes benchmarks/results/fast_queries_<config>.json + .md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from cafe_core.data.datasets import load_split
from cafe_core.evaluation.evaluate import evaluate_attacks
from cafe_core.evaluation.grid_settings import DEFAULT_STEPS
from cafe_core.io.checkpoints import load_backbone
from cafe_core.io.config import load_config
from cafe_core.io.provenance import provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def run(model, test, config, steps: int, batch_size: int, fast: bool, device: str) -> dict:
    os.environ["CAFE_FAST_QUERIES"] = "1" if fast else "0"
    start = time.perf_counter()
    r = evaluate_attacks(model, test, ["autoattack"], config["eps"], seed=config["seed"], batch_size=batch_size,
                         device=device, steps={"autoattack": steps}, progress=False)
    return {"accuracy": r["accuracy"]["autoattack"], "correct": r["correct"]["autoattack"],
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_lite")
    parser.add_argument("--checkpoint", default="defense_adv", help="checkpoint name in the config's folder")
    parser.add_argument("--n", type=int, default=100, help="first N test images")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    steps = config.get("evaluation", {}).get("steps", {}).get("autoattack", DEFAULT_STEPS["autoattack"])
    batch_size = config.get("batch_size_eval", 500)
    test = load_split(config["dataset"], "test", None, config["n_val"], config["seed"], download=False, limit=args.n)
    model, card = load_backbone(ROOT / config["checkpoint_dir"] / f"{args.checkpoint}.safetensors", device=args.device)
    eager = run(model, test, config, steps, batch_size, False, args.device)
    fast = run(model, test, config, steps, batch_size, True, args.device)
    changed = sum(a != b for a, b in zip(eager["correct"], fast["correct"]))
    result = {"config": config["name"], "checkpoint": args.checkpoint, "sha256": card["sha256"], "n_images": len(test),
              "eps": config["eps"], "seed": config["seed"], "autoattack_steps": steps, "batch_size": batch_size,
              "eager": {k: eager[k] for k in ("accuracy", "seconds")},
              "compiled": {k: fast[k] for k in ("accuracy", "seconds")},
              "images_with_different_verdict": changed, "speedup": round(eager["seconds"] / fast["seconds"], 2),
              "threads": torch.get_num_threads(), **provenance()}
    out = ROOT / "benchmarks" / "results" / f"fast_queries_{config['name']}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(["Square queries", "AutoAttack accuracy", "seconds"],
                           [[name, f"{100 * result[name]['accuracy']:.2f}%", f"{result[name]['seconds']:.1f}"]
                            for name in ("eager", "compiled")])
    md = (f"AutoAttack-{steps} (standard, Square 5,000 queries) on the first {len(test)} test images of "
          f"`{args.checkpoint}` ({config['name']}, eps {config['eps']}, seed {config['seed']}, "
          f"{result['hardware']}).\n\n{table}\n\n"
          f"Speed-up {result['speedup']}x; images with a different verdict: {changed}.")
    atomic_write_text(out.with_suffix(".md"), md + "\n")
    print(md)


if __name__ == "__main__":
    main()
