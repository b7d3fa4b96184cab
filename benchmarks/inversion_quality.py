"""How readable are the feature inversions? Quality and cost of each inversion setting.

For each setting (the app's, the CLI figure's, and alternatives) and each network (the robust
ADV backbone and the undefended standard one), invert the Natural feature F_n = f(x) of the
first N test images from the shared grey start and measure:

- ``corr_natural_mean`` / ``corr_natural_p10``: Pearson correlation of the inversion with the
  clean image (mean and 10th percentile over images): does the picture show the object?
- ``label_agreement``: the network labels the inversion as c(F_n), the target's own label.
- ``seconds_per_image``: wall time of the app's call for one image (its four Fig. 3 targets in
  one batch), on this machine with the torch threads given.

The inversion of each image does not depend on the others in its batch (per-sample losses,
elementwise Adam, shared jitter shifts), so quality is measured in batches and cost per image.

    python benchmarks/inversion_quality.py --n 500
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cafe_core.causal.feature_inversion import APP_INVERSION, CLI_INVERSION, InversionSetting
from cafe_core.data.datasets import load_split
from cafe_core.io.provenance import provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.serving.predict import checkpoint_dir, load_stage

ROOT = Path(__file__).resolve().parent.parent
# name -> feature_inversion keyword arguments. "app" and "cli_figure" are what the app and the
# CLI's Fig. 3 grid use; the others are the alternatives the app's choice was measured against.
SETTINGS: dict[str, InversionSetting] = {
    "app": APP_INVERSION,
    "cli_figure": CLI_INVERSION,
    "pixels_25_grey": InversionSetting(steps=25, lr=0.05),
    "coarse14_25_grey": InversionSetting(steps=25, lr=0.1, resolution=14),
    "coarse14_25_black_jitter": InversionSetting(steps=25, lr=0.15, resolution=14, tv_weight=0.1, start_level=0.0),
    "coarse7_25_grey": InversionSetting(steps=25, lr=0.2, resolution=7),
}


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of two (N, ...) batches; 0 where either is constant."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denom = (a.norm(dim=1) * b.norm(dim=1))
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-12), torch.zeros_like(denom)).float()


def measure(backbone: torch.nn.Module, images: torch.Tensor, setting: InversionSetting, batch: int,
            timing_images: int, seed: int) -> dict[str, Any]:
    corr, agree = [], []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        with torch.no_grad():
            target = backbone.features(x)
        inv = setting.invert(backbone, {"natural": target}, x.shape, seed=seed)
        picture = inv.images["natural"]
        with torch.no_grad():
            agree.append(backbone(picture).argmax(1) == inv.labels["natural"])
        corr.append(pearson(picture, x))
    corr_all, agree_all = torch.cat(corr), torch.cat(agree)
    seconds = []
    for i in range(timing_images):  # the app's call: one image, its four targets in one batch
        x = images[i:i + 1]
        with torch.no_grad():
            f = backbone.features(x)
        targets = {k: f + 0.01 * j for j, k in enumerate(("natural", "adversarial", "causal", "counterfactual"))}
        t0 = time.perf_counter()
        setting.invert(backbone, targets, x.shape, seed=seed)
        seconds.append(time.perf_counter() - t0)
    return {"corr_natural_mean": float(corr_all.mean()), "corr_natural_p10": float(torch.quantile(corr_all, 0.1)),
            "label_agreement": float(agree_all.float().mean()),
            "seconds_per_image": statistics.median(seconds) if seconds else None, "n_images": len(corr_all)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="first N test images")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of " + ", ".join(SETTINGS))
    parser.add_argument("--networks", default="adv,standard")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--timing-images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the app's workers use 1)")
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inversion_quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = checkpoint_dir(args.checkpoints)
    card = load_stage(folder, "adv").card
    cfg = card.get("config", {})
    test = load_split(card["dataset"], "test", None, cfg.get("n_val", 5000), cfg.get("seed", 0), limit=args.n,
                      download=False)
    images = torch.stack([test[i][0] for i in range(len(test))])
    rows = []
    for network in args.networks.split(","):
        backbone = load_stage(folder, network).model.eval()
        for name in args.settings.split(","):
            setting = SETTINGS[name]
            where = f"coarse {setting.resolution}x{setting.resolution}" if setting.resolution else "pixels"
            method = (f"{where}, Adam lr {setting.lr:g}, TV {setting.tv_weight:g}, jitter {setting.jitter}, "
                      f"start {'grey' if setting.start_level else 'black'}")
            row = {"setting": name if network == "adv" else f"{name} ({network})", "network": network,
                   "method": method, "steps": setting.steps, **asdict(setting),
                   **measure(backbone, images, setting, args.batch, args.timing_images, args.seed)}
            rows.append(row)
            print(f"{row['setting']:32s} corr {row['corr_natural_mean']:.3f} (p10 {row['corr_natural_p10']:.3f}) "
                  f"agree {row['label_agreement']:.3f} {row['seconds_per_image']:.3f} s", flush=True)
    result = {"rows": rows, "n_images": len(images), "threads": args.threads, "seed": args.seed,
              "checkpoints": folder.relative_to(ROOT).as_posix() if folder.is_relative_to(ROOT) else folder.name,
              "target_app": {"corr_natural_mean": 0.75, "label_agreement": 0.9},
              **provenance()}
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(["setting", "method", "steps", "corr (mean)", "corr (p10)", "label agreement", "s / image"],
                           [[r["setting"], r["method"], str(r["steps"]), f"{r['corr_natural_mean']:.3f}",
                             f"{r['corr_natural_p10']:.3f}", f"{r['label_agreement']:.3f}",
                             f"{r['seconds_per_image']:.3f}"] for r in rows])
    atomic_write_text(out.with_suffix(".md"),
                      f"Feature inversion of the Natural feature, first {len(images)} test images, "
                      f"{args.threads} torch thread(s), {result['hardware']}. Target for the app's setting: "
                      f"corr >= 0.75, label agreement >= 0.9.\n\n{table}\n")


if __name__ == "__main__":
    main()
