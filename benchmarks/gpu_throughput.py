"""Images per second of each training building block on one device, on synthetic data.

Times, with the project's own stage and attack code on random 3x32x32 images (no dataset):
a plain forward pass, a training step (forward + backward + SGD, the ``standard`` stage), PGD-10,
causal inversion (10 steps), one AMR-GMM step and one ADV + CAFE defense step. Reports the
cost ratios of the method (AMR-GMM step / (PGD-10 + forward); CAFE step / (PGD-10 +
inversion + 2 forward-backward)), each step against a plain forward-backward, and the training
time per stage of a paper recipe that follows (training batches only; validation excluded).

    python benchmarks/gpu_throughput.py --batch-size 256 --iters 20            # on a GPU
    python benchmarks/gpu_throughput.py --device cpu --batch-size 4 --iters 2  # smoke run
writes benchmarks/results/gpu_throughput_<device>.json and .md (<device>: cpu, cuda_NVIDIA_H100_...).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Callable

import torch

from benchmarks.amr_step_speed import timed
from benchmarks.defense_step_speed import defense_stage
from cafe_core.attacks.causal_inversion import CausalInversion
from cafe_core.attacks.registry import build_attack
from cafe_core.io.config import load_config, stage_config
from cafe_core.io.provenance import provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.models import create_model
from cafe_core.training.amr_gmm import AMRStage
from cafe_core.training.classifier_stages import ClassifierStage
from cafe_core.training.trainer import Precision, Runtime, pick_device

EPS, EPS_INV = 8 / 255, 4 / 255
TRAIN_IMAGES = {"cifar10": 50_000, "svhn": 73_257, "tiny-imagenet": 100_000, "fashion-mnist": 60_000}
# Per-image cost of one training batch of each stage, as sums of the timed steps.
STAGE_COST = {"standard": ["fwd_bwd"], "adv": ["pgd10", "fwd_bwd"], "amr": ["amr_step"],
              "defense adv": ["pgd10", "fwd_bwd"], "defense adv + CAFE": ["cafe_step"]}


def device_tag(device: torch.device) -> str:
    """``cpu`` or ``cuda_<GPU name>`` (file-name safe)."""
    if device.type != "cuda":
        return device.type
    return "cuda_" + re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name(device)).strip("_")


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(iters))


def building_blocks(backbone: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                    precision: Precision, runtime: Runtime) -> dict[str, Callable[[], object]]:
    """Each timed step as a closure over its own stage (fresh networks, seed 0)."""
    channels = images.shape[1]
    torch.manual_seed(0)
    standard = ClassifierStage("standard", create_model(backbone, channels, 10),
                               {"lr": 0.1, "epochs": 1, "attack": "none"}, 100, device, precision, runtime)
    net = standard.net
    pgd = build_attack("pgd", net, EPS, 10)
    inversion = CausalInversion(net, EPS_INV, 10)
    amr = AMRStage(create_model(backbone, channels, 10), {"eps": EPS, "steps": 10}, device, precision, runtime)
    cafe = defense_stage({"backbone": backbone, "eps": EPS, "steps": 10, "eps_inv": EPS_INV, "inversion_steps": 10,
                          "lr": 1e-3, "epochs": 1, "warmup": 0.5}, "adv", "cafe", channels, device, precision, runtime)

    def forward() -> None:
        with torch.no_grad(), precision.autocast():
            net.eval()(images)

    def invert() -> None:
        with torch.no_grad(), precision.autocast():
            target = net.eval()(images)
        with precision.autocast():
            inversion(images, target)

    def attack() -> None:
        with precision.autocast():
            pgd(images, labels)

    return {"forward": forward, "fwd_bwd": lambda: standard.train_batch(images, labels), "pgd10": attack,
            "inversion10": invert, "amr_step": lambda: amr.train_batch(images, labels),
            "cafe_step": lambda: cafe.train_batch(images, labels)}


def stage_estimates(config_name: str, seconds: dict[str, float], batch: int) -> list[dict]:
    """Training time per stage of a recipe from the measured per-image costs (ideal N-GPU scaling)."""
    config = load_config(config_name)
    n_train = TRAIN_IMAGES[config["dataset"]] - config["n_val"]
    rows = []
    for label, parts in STAGE_COST.items():
        epochs = stage_config(config, label.split()[0])["epochs"]
        per_image = sum(seconds[p] for p in parts) / batch
        hours = epochs * n_train * per_image / 3600
        rows.append({"stage": label, "epochs": epochs, "train_images": n_train, "hours_1_device": hours,
                     "hours_8_devices_ideal": hours / 8})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="image side (3 x size x size)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20, help="timed repeats per step (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repeats first (cudnn autotune, compile)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="autocast on CUDA")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                        help="NHWC networks and inputs on CUDA")
    parser.add_argument("--config", default="cifar10_resnet18", help="recipe for the per-stage time estimate")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--out", default=None)
    parser.add_argument("--markdown-from", default=None, metavar="JSON",
                        help="only rewrite the .md beside a results JSON (e.g. one measured on a GPU machine)")
    args = parser.parse_args()
    if args.markdown_from:
        path = Path(args.markdown_from)
        atomic_write_text(path.with_suffix(".md"), markdown(json.loads(path.read_text())) + "\n")
        return
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtime = Runtime(amp=args.amp, channels_last=args.channels_last)
    precision = Precision(device, enabled=args.amp)
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    if args.channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    steps = building_blocks(args.backbone, images, labels, device, precision, runtime)
    seconds = {}
    for name, fn in steps.items():
        seconds[name] = median_seconds(fn, device, args.warmup, args.iters)
        print(f"{name:12s} {seconds[name]:.4f} s/batch  {args.batch_size / seconds[name]:9.1f} images/s", flush=True)
    base = seconds["fwd_bwd"]
    result = {
        "device": device_tag(device), "backbone": args.backbone,
        "input": [3, args.size, args.size], "batch_size": args.batch_size, "iters": args.iters, "warmup": args.warmup,
        "amp": precision.enabled,
        "amp_dtype": str(precision.dtype).replace("torch.", "") if precision.enabled else None,
        "channels_last": args.channels_last and device.type == "cuda", "threads": torch.get_num_threads(),
        "steps": {name: {"seconds_per_batch": s, "images_per_s": args.batch_size / s, "vs_fwd_bwd": s / base}
                  for name, s in seconds.items()},
        "ratios": {
            "amr_step / (pgd10 + forward)": seconds["amr_step"] / (seconds["pgd10"] + seconds["forward"]),
            "cafe_step / (pgd10 + inversion10 + 2 fwd_bwd)":
                seconds["cafe_step"] / (seconds["pgd10"] + seconds["inversion10"] + 2 * base),
        },
        "estimate_config": args.config, "estimates": stage_estimates(args.config, seconds, args.batch_size),
        **provenance(),
    }
    out = Path(args.out or f"benchmarks/results/gpu_throughput_{result['device']}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(result) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    """The steps table, the two method ratios and the per-stage estimate."""
    steps = markdown_table(["step", "s/batch", "images/s", "x fwd+bwd"],
                           [[name, f"{s['seconds_per_batch']:.4f}", f"{s['images_per_s']:.1f}",
                             f"{s['vs_fwd_bwd']:.2f}"] for name, s in result["steps"].items()])
    ratios = markdown_table(["ratio", "value"], [[k, f"{v:.2f}"] for k, v in result["ratios"].items()])
    rows = [[r["stage"], str(r["epochs"]), str(r["train_images"]), f"{60 * r['hours_1_device']:.1f}",
             f"{60 * r['hours_8_devices_ideal']:.1f}"] for r in result["estimates"]]
    hours = {r["stage"]: r["hours_1_device"] for r in result["estimates"]}
    # The whole pipeline: standard, ADV, AMR-GMM, 5 baselines and 5 CAFE twins + the h = 0 control,
    # each defense costed as ADV (TRADES/MART/AWP/HELP differ by up to ~1.5x per step).
    total = (hours["standard"] + hours["adv"] + hours["amr"] + 5 * hours["defense adv"]
             + 6 * hours["defense adv + CAFE"])
    rows.append(["whole pipeline (defenses costed as ADV)", "", "", f"{60 * total:.1f}", f"{60 * total / 8:.1f}"])
    estimate = markdown_table(["stage", "epochs", "train images", "min on 1 device", "min on 8 (ideal)"], rows)
    return (f"{result['backbone']} on {result['input'][1]}x{result['input'][2]}, batch {result['batch_size']}, "
            f"{result['hardware']} (AMP {result['amp_dtype'] or 'off'}, channels_last "
            f"{'on' if result['channels_last'] else 'off'}); median of {result['iters']} repeats.\n\n"
            f"{steps}\n\n{ratios}\n\nTraining time per stage of `{result['estimate_config']}` from these costs "
            f"(epochs x train images x s/image; validation excluded; 8 devices assume perfect scaling):\n\n{estimate}")


if __name__ == "__main__":
    main()
