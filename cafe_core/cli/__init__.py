"""Command line: ``python -m cafe_core <command> ...`` (see ``--help`` of each command).

This module parses the command line only; each command's work is in its own module, ``cafe_core.cli.<command>``.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Sequence

from .. import __version__

#: Command name -> its module in cafe_core.cli (each has ``run(args) -> int``).
COMMANDS = {"train": "train", "evaluate": "evaluate", "pipeline": "pipeline", "analyze": "analyze",
            "report": "report", "export-examples": "export_examples", "ood": "ood"}


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
    train.add_argument("--stage", required=True, choices=["standard", "adv", "amr", "defense"])
    train.add_argument("--parent", default=None, help="checkpoint to start from (amr, defense: the ADV backbone)")
    train.add_argument("--defense", default=None, help="defense stage: adv, trades, mart, awp, help")
    train.add_argument("--cafe", action="store_true", help="defense stage: add the CAFE term (causal inoculation)")
    train.add_argument("--control-h0", action="store_true", help="defense stage: CAFE term with h = 0 (control)")
    train.add_argument("--amr", default=None, help="AMR-GMM checkpoint whose h CAFE uses")
    train.add_argument("--std-model", default=None, help="standard model for HELP")
    train.add_argument("--config", default="fashion_lite", help="name in configs/ or a .toml path")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. stages.adv.epochs=2 (repeatable)")
    train.add_argument("--out", default=None, help="output .safetensors (default: <checkpoint_dir>/<stage>.safetensors)")
    train.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    train.add_argument("--data-root", default=None, help="dataset folder (default: Debian's / cache)")
    speed = train.add_argument_group("GPU speed (no effect on CPU; none changes the method)")
    speed.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too (default: bf16/fp16 autocast)")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                       help="NHWC memory layout on CUDA (default: on)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the trained backbone (default: off)")
    speed.add_argument("--workers", type=int, default=0,
                       help="DataLoader workers, with pinned memory and persistent workers (default: 0)")
    speed.add_argument("--sync-bn", action="store_true",
                       help="under torchrun: BatchNorm of the trained backbone over all ranks' images "
                            "(h and g always); then N GPUs compute what one GPU with the whole batch does")
    _add_common(train)

    ev = sub.add_parser("evaluate", help="accuracy of a checkpoint (or, with --grid, of every defense) under attacks")
    target = ev.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", help="backbone .safetensors with its card")
    target.add_argument("--grid", metavar="CONFIG", help="the robustness grid of a config's defense checkpoints: "
                        "writes benchmarks/results/robustness_<config>.json (resumable)")
    ev.add_argument("--phases", default="fast,autoattack,strong,curves",
                    help="grid phases, in order: fast (clean/FGSM/PGD/Square), autoattack, strong (CW/APGD), curves")
    ev.add_argument("--defenses", default=None, help="grid: comma list of defenses (default: all five)")
    ev.add_argument("--models", default=None,
                    help="grid: comma list of rows, e.g. defense_adv-cafe (default: all; one process per model)")
    ev.add_argument("--curve-n", action="append", default=[], metavar="ATTACK=N",
                    help="grid: images for the eps curves, e.g. autoattack=100")
    ev.add_argument("--curve-attacks", default="pgd,autoattack", help="grid: attacks of the eps curves")
    ev.add_argument("--attacks", default="clean,fgsm,pgd", help="comma list: clean,fgsm,pgd,cw,apgd_ce,apgd_dlr,autoattack")
    ev.add_argument("--eps", type=float, default=None, help="L-inf radius on [0,1] (default: the card's)")
    ev.add_argument("--steps", action="append", default=[], metavar="ATTACK=N", help="e.g. pgd=20")
    ev.add_argument("--n", "--n-images", dest="n", type=int, default=None,
                    help="first N test images (default: all); under torchrun write --n-images "
                         "(torchrun reads --n as an abbreviation of its own options)")
    ev.add_argument("--limit", action="append", default=[], metavar="ATTACK=N",
                    help="first N images for one attack, e.g. autoattack=1000")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=None,
                    help="images per attack batch (default: the config's [evaluation] batch_size for --grid, "
                         "else 500); stored results are keyed by it")
    ev.add_argument("--attack-batch-size", action="append", default=[], metavar="ATTACK=N",
                    help="grid: batch size of one attack (over the config's [evaluation] batch_sizes)")
    ev.add_argument("--prune-state", action="store_true",
                    help="grid: evaluate nothing; list the per-image state files (benchmarks/results/state/"
                         "robustness_<config>/) of checkpoints that no longer exist: a row's earlier sha256, "
                         "or a row without checkpoint. A dry run unless --yes is given. The grid itself never "
                         "deletes state: a retrained checkpoint gets a file of its own (<row>@<sha256[:12]>.json)")
    ev.add_argument("--yes", action="store_true", help="with --prune-state: remove the listed files")
    ev.add_argument("--split", default="test", choices=["test", "val"])
    ev.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/eval_<config>_<stage>.json)")
    ev.add_argument("--data-root", default=None)
    _add_common(ev)
    pl = sub.add_parser("pipeline", help="every stage of a recipe in order, skipping those already done")
    pl.add_argument("--config", default="fashion_lite", help="name in configs/ or a .toml path")
    pl.add_argument("--only", default="", help="comma list of steps or kinds to run (e.g. train, defense_awp-cafe)")
    pl.add_argument("--skip", default="", help="comma list of steps or kinds to leave out (e.g. evaluation)")
    pl.add_argument("--dry-run", action="store_true", help="only list each step and why it would run")
    pl.add_argument("--data-root", default=None)
    _add_common(pl)
    an = sub.add_parser("analyze", help="causal analysis of an AMR-GMM checkpoint: accuracies, KL, controls, Fig. 3 grid")
    an.add_argument("--amr", default=None, help="AMR-GMM .safetensors (h and g) with its card")
    an.add_argument("--from-report", default=None, metavar="JSON",
                    help="rerun the analysis of an app report (settings, seed and image from the file)")
    an.add_argument("--checkpoints", default=None, help="--from-report: checkpoint set (default: the shipped one)")
    an.add_argument("--attack", default="pgd")
    an.add_argument("--steps", type=int, default=20, help="attack steps (default 20)")
    an.add_argument("--eps", type=float, default=None, help="attack radius (default: the card's)")
    an.add_argument("--eps-inv", type=float, default=None, help="inversion radius (default: config / paper table)")
    an.add_argument("--inversion-steps", type=int, default=3)
    an.add_argument("--sweep-eps-inv", default="", help="comma list of eps_inv values to measure on --sweep-n images")
    an.add_argument("--sweep-n", type=int, default=1000)
    an.add_argument("--n", type=int, default=None, help="first N test images (default: all)")
    an.add_argument("--figure-n", type=int, default=6, help="images in the Fig. 3-style grid (0: none)")
    an.add_argument("--figure-select", choices=["fooled", "first"], default="fooled",
                    help="grid images: the first ones the attack fools (default) or simply the first ones")
    an.add_argument("--figure-only", action="store_true", help="only (re)draw the Fig. 3-style grid")
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--batch-size", type=int, default=500)
    an.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/causal_<config>.json)")
    an.add_argument("--data-root", default=None)
    _add_common(an)

    rp = sub.add_parser("report", help="re-render the markdown of a results JSON (causal_*.json or eval_*.json)")
    rp.add_argument("json", help="a results file written by analyze or evaluate")

    ex = sub.add_parser("export-examples", help="write one real test image per class as PNG (app gallery)")
    ex.add_argument("--dataset", default="fashion-mnist")
    ex.add_argument("--out", default="assets/examples")
    ex.add_argument("--per-class", type=int, default=1)
    ex.add_argument("--data-root", default=None)
    od = sub.add_parser("ood", help="fit the out-of-distribution detector of a checkpoint set (ood.safetensors + card)")
    od.add_argument("--config", default="fashion_lite", help="name in configs/ or a .toml path")
    od.add_argument("--parent", default=None, help="backbone to fit on (default: <checkpoint_dir>/adv.safetensors)")
    od.add_argument("--out", default=None, help="output .safetensors (default: <checkpoint_dir>/ood.safetensors)")
    od.add_argument("--limit", type=int, default=None, help="only the first N training and N validation images")
    od.add_argument("--data-root", default=None, help="dataset folder (default: Debian's / cache)")
    _add_common(od)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and --version end here, before torch is imported
    from ..distributed import env_world

    if env_world().size > 1 and not (args.command == "train" or (args.command == "evaluate" and not args.grid)):
        raise SystemExit(f"'{args.command}' runs as one process; under torchrun only 'train' and "
                         "'evaluate --checkpoint' are supported")
    return importlib.import_module(f"{__name__}.{COMMANDS[args.command]}").run(args)
