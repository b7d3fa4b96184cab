"""Cost of one AMR-GMM training step vs the PGD attack that feeds it plus one backbone forward.

Target (issue: AMR-GMM): step <= 1.3 x (PGD + forward). Both are timed side by side in one
run, alternating, on the same batch; the median of the repeats is reported.

    python benchmarks/amr_step_speed.py --backbone lite --size 28 --channels 1 --repeats 10
writes benchmarks/results/amr_step_speed_<backbone>_<device>.json and a .md table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from cafe_core.io.provenance import provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.models import create_model
from cafe_core.training.amr_gmm import AMRStage
from cafe_core.training.trainer import Precision, pick_device


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.backbone, args.channels, 10).to(device)
    stage = AMRStage(model, {"eps": 0.1, "steps": args.steps}, device, Precision(device))
    images = torch.rand(args.batch_size, args.channels, args.size, args.size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)

    def attack_and_forward() -> None:
        with stage.precision.autocast():
            adv = stage.attack(images, labels)
            with torch.no_grad():
                stage.backbone(adv)

    def amr_step() -> None:
        stage.train_batch(images, labels)

    attack_and_forward(), amr_step()  # warm-up
    base, step = [], []
    for _ in range(args.repeats):
        base.append(timed(attack_and_forward, device))
        step.append(timed(amr_step, device))
    result = {
        "backbone": args.backbone, "input": [args.channels, args.size, args.size], "batch_size": args.batch_size,
        "pgd_steps": args.steps, "repeats": args.repeats,
        "pgd_plus_forward_s": statistics.median(base), "amr_step_s": statistics.median(step),
        "ratio": statistics.median(step) / statistics.median(base), "target_ratio": 1.3,
        "estimator_params": sum(p.numel() for p in stage.h.parameters()),
        "backbone_params": sum(p.numel() for p in model.parameters()),
        "device": str(device), "threads": torch.get_num_threads(), **provenance(),
    }
    tag = "cpu" if device.type == "cpu" else "cuda"
    out = Path(args.out or f"benchmarks/results/amr_step_speed_{args.backbone}_{tag}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(["backbone", "PGD-%d + forward (s)" % args.steps, "AMR-GMM step (s)", "ratio", "target"],
                           [[args.backbone, f"{result['pgd_plus_forward_s']:.3f}", f"{result['amr_step_s']:.3f}",
                             f"{result['ratio']:.2f}", "<= 1.30"]])
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
