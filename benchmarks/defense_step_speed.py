"""Seconds per training batch for each defense, with and without the CAFE term.

Used to size the lite recipe (issue: defenses, "all 11 defense models train in under 60 min"):
the estimate per model is s/batch x batches/epoch x epochs, plus validation.

    python benchmarks/defense_step_speed.py --batches 8 --threads 2
writes benchmarks/results/defense_step_speed_<backbone>_<device>.json and a .md table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from cafe_core.defenses import DEFENSES
from cafe_core.defenses.cafe_mode import CafeMode
from cafe_core.evaluation.grid_rows import GridRow, grid_rows
from cafe_core.io.config import load_config, stage_config
from cafe_core.io.provenance import provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.models import create_model
from cafe_core.models.estimator import create_estimator
from cafe_core.training.defense_stage import DefenseStage
from cafe_core.training.trainer import Precision, Runtime, pick_device


def defense_stage(cfg: dict, defense: str, cafe: CafeMode | str | None, channels: int, device: torch.device,
                  precision: Precision, runtime: Runtime | None = None) -> DefenseStage:
    """A DefenseStage on a fresh backbone (seed 0), with an untrained h / standard model where needed."""
    cafe = CafeMode.parse(cafe)
    torch.manual_seed(0)
    model = create_model(cfg["backbone"], channels, 10)
    helper = create_model(cfg["backbone"], channels, 10) if defense == "help" else None
    h = create_estimator(model.feature_channels) if cafe is CafeMode.CAFE else None
    return DefenseStage(model, {**cfg, "defense": defense, "cafe": cafe.to_card()}, 100, device, precision,
                        causal_estimator=h, std_model=helper, runtime=runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_lite")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per model (after 1 warm-up)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    cfg = stage_config(config, "defense")
    cfg.setdefault("eps_inv", config.get("analysis", {}).get("eps_inv", cfg["eps"] / 2))
    shape = (1, 28, 28) if config["dataset"] == "fashion-mnist" else (3, 32, 32)
    bs = cfg["batch_size"]
    images = torch.rand(bs, *shape, device=device)
    labels = torch.randint(0, 10, (bs,), device=device)
    rows = []
    for defense in DEFENSES.names():
        for cafe in CafeMode:
            stage = defense_stage(cfg, defense, cafe, shape[0], device, Precision(device))
            stage.train_batch(images, labels)
            times = []
            for _ in range(args.batches):
                start = time.perf_counter()
                stage.train_batch(images, labels)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            per_batch = statistics.median(times)
            n = cfg.get("train_limit") or 55000
            epoch_s = per_batch * (n // bs)
            rows.append({"defense": defense, "cafe": cafe.to_card() or "none", "s_per_batch": per_batch,
                         "images_per_s": bs / per_batch, "est_train_s": epoch_s * cfg["epochs"]})
            print(f"{defense:6s} {rows[-1]['cafe']:10s} {per_batch:.3f} s/batch  est {rows[-1]['est_train_s']:.0f} s",
                  flush=True)
    grid = set(grid_rows())  # the 11 models the grid trains
    total = sum(r["est_train_s"] for r in rows if GridRow(r["defense"], CafeMode.parse(r["cafe"])) in grid)
    result = {"config": args.config, "batch_size": bs, "epochs": cfg["epochs"], "train_limit": cfg.get("train_limit"),
              "steps": cfg.get("steps"), "inversion_steps": cfg.get("inversion_steps"), "rows": rows,
              "est_grid_train_s": total, "threads": torch.get_num_threads(), **provenance()}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / \
        f"defense_step_speed_{cfg['backbone']}_{device.type}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(["defense", "cafe", "s/batch", "images/s", "est. train s"],
                           [[r["defense"], r["cafe"], f"{r['s_per_batch']:.3f}", f"{r['images_per_s']:.0f}",
                             f"{r['est_train_s']:.0f}"] for r in rows])
    atomic_write_text(out.with_suffix(".md"), table + f"\nEstimated grid (11 models, training only): {total:.0f} s\n")
    print(f"grid estimate {total:.0f} s -> {out}")


if __name__ == "__main__":
    main()
