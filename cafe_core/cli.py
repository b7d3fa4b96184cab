"""Command line: ``python -m cafe_core <command> ...`` (see ``--help`` of each command)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from . import __version__


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cafe_core",
                                     description="CAFE Lab: causal features on adversarial examples.")
    parser.add_argument("--version", action="version", version=f"cafe_core {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one stage and write a checkpoint + card")
    train.add_argument("--stage", required=True, choices=["standard", "adv"])
    train.add_argument("--config", default="fashion_lite", help="name in configs/ or a .toml path")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. stages.adv.epochs=2 (repeatable)")
    train.add_argument("--out", default=None, help="output .safetensors (default: <checkpoint_dir>/<stage>.safetensors)")
    train.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    train.add_argument("--data-root", default=None, help="dataset folder (default: Debian's / cache)")
    _add_common(train)

    ev = sub.add_parser("evaluate", help="accuracy of a checkpoint under attacks; prints a table, writes JSON")
    ev.add_argument("--checkpoint", required=True, help="backbone .safetensors with its card")
    ev.add_argument("--attacks", default="clean,fgsm,pgd", help="comma list: clean,fgsm,pgd,cw,apgd_ce,apgd_dlr,autoattack")
    ev.add_argument("--eps", type=float, default=None, help="L-inf radius on [0,1] (default: the card's)")
    ev.add_argument("--steps", action="append", default=[], metavar="ATTACK=N", help="e.g. pgd=20")
    ev.add_argument("--n", type=int, default=None, help="first N test images (default: all)")
    ev.add_argument("--limit", action="append", default=[], metavar="ATTACK=N",
                    help="first N images for one attack, e.g. autoattack=1000")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--split", default="test", choices=["test", "val"])
    ev.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/eval_<config>_<stage>.json)")
    ev.add_argument("--data-root", default=None)
    _add_common(ev)
    ex = sub.add_parser("export-examples", help="write one real test image per class as PNG (app gallery)")
    ex.add_argument("--dataset", default="fashion-mnist")
    ex.add_argument("--out", default="assets/examples")
    ex.add_argument("--per-class", type=int, default=1)
    ex.add_argument("--data-root", default=None)
    return parser


def _pairs(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected ATTACK=N, got {item!r}")
        out[key.strip()] = int(value)
    return out


def _setup(args: argparse.Namespace) -> torch.device:
    from .train import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def cmd_train(args: argparse.Namespace) -> int:
    from .classifier_stages import ClassifierStage
    from .config import load_config, stage_config
    from .data import get_info, load_split
    from .models import create_model
    from .train import Precision, fit, seed_everything

    device = _setup(args)
    config = load_config(args.config, args.overrides)
    cfg = stage_config(config, args.stage)
    info = get_info(cfg["dataset"])
    train_set = load_split(info.name, "train", args.data_root, cfg["n_val"], cfg["seed"], limit=args.limit)
    val_set = load_split(info.name, "val", args.data_root, cfg["n_val"], cfg["seed"])
    seed_everything(cfg["seed"])
    model = create_model(cfg["backbone"], info.channels, info.num_classes, info.mean, info.std)
    steps_per_epoch = len(train_set) // cfg["batch_size"]
    stage = ClassifierStage(args.stage, model, cfg, steps_per_epoch, device, Precision(device))
    out = Path(args.out or Path(cfg["checkpoint_dir"]) / f"{args.stage}.safetensors")
    card = {"dataset": info.name, "backbone": cfg["backbone"], "stage": args.stage, "parent": None,
            "config_name": config["name"], "config": cfg, "eps": cfg["eps"],
            "n_train_images": len(train_set), "n_val_images": len(val_set),
            "command": "python -m cafe_core " + " ".join(sys.argv[1:])}
    started = time.perf_counter()
    result = fit(stage, train_set, val_set, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                 seed=cfg["seed"], out=out, card=card, device=device, progress=not args.quiet)
    print(f"wrote {out} (epoch {result.card['epoch_selected']} selected; "
          f"{time.perf_counter() - started:.0f} s this run)")
    print(json.dumps(result.card["metrics"], indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoints import library_versions, load_backbone
    from .data import load_split
    from .evaluate import evaluate_attacks
    from .reporting import markdown_table
    from .serialization import atomic_write_text

    device = _setup(args)
    model, card = load_backbone(args.checkpoint, device=device)
    eps = card["eps"] if args.eps is None else args.eps
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    cfg = card["config"]
    dataset = load_split(card["dataset"], args.split, args.data_root, cfg["n_val"], cfg["seed"], limit=args.n)
    out = Path(args.out or f"benchmarks/results/eval_{card.get('config_name', 'model')}_{card['stage']}.json")
    state = out.with_suffix(".state.json")
    started = time.perf_counter()
    result = evaluate_attacks(model, dataset, attacks, eps, args.seed, args.batch_size, device,
                              _pairs(args.limit), state, _pairs(args.steps), progress=not args.quiet)
    report = {"checkpoint": str(args.checkpoint), "sha256": card["sha256"], "stage": card["stage"],
              "dataset": card["dataset"], "backbone": card["backbone"], "split": args.split, "eps": eps,
              "seed": args.seed, "accuracy": result["accuracy"], "n_images": result["n_images"],
              "steps": _pairs(args.steps), "seconds": result["seconds"],
              "wall_seconds_this_run": round(time.perf_counter() - started, 1),
              "versions": library_versions(), "command": "python -m cafe_core " + " ".join(sys.argv[1:])}
    from .checkpoints import hardware

    report["hardware"] = hardware()
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    rows = [[a, f"{100 * result['accuracy'][a]:.2f}", str(result["n_images"][a]), f"{result['seconds'][a]:.0f}"]
            for a in attacks]
    table = markdown_table(["attack", "accuracy %", "images", "seconds"], rows)
    atomic_write_text(out.with_suffix(".md"), f"{card['dataset']} {card['backbone']} {card['stage']}, "
                      f"eps={eps:.4f}, seed={args.seed}\n\n{table}\n")
    state.unlink(missing_ok=True)
    print(table)
    print(f"wrote {out}")
    return 0


def cmd_export_examples(args: argparse.Namespace) -> int:
    from PIL import Image

    from .data import load_split
    from .images import image_to_uint8

    test = load_split(args.dataset, "test", args.data_root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(test.class_names):
        indices = (test.labels == label).nonzero().flatten()[: args.per_class].tolist()
        for index in indices:
            pixels = image_to_uint8(test[index][0])
            image = Image.fromarray(pixels[..., 0] if test.images.shape[1] == 1 else pixels)
            slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
            image.save(out / f"{label}_{slug}_test{index}.png")
            print(f"{out / f'{label}_{slug}_test{index}.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "export-examples": cmd_export_examples}
    return handlers[args.command](args)
