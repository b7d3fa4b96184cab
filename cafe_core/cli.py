"""Command line: ``python -m cafe_core <command> ...`` (see ``--help`` of each command)."""
from __future__ import annotations

import argparse
import json
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


def _command_line() -> str:
    """The command as typed, recorded in cards and results so every number can be reproduced."""
    from .provenance import command_line

    return command_line("-m cafe_core")


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


def _setup_ranks(args: argparse.Namespace) -> torch.device:
    """``_setup`` for commands that run under torchrun: joins its process group when there is one
    and returns this rank's device (``cuda:LOCAL_RANK``); without torchrun the same as ``_setup``."""
    from . import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    return distributed.init(args.device)


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .cafe_mode import CafeMode
    from .config import load_config
    from .stages import run_stage
    from .train import Runtime

    if args.cafe and args.control_h0:
        raise SystemExit("choose --cafe or --control-h0, not both")
    config = load_config(args.config, args.overrides)
    device = _setup_ranks(args)
    try:
        started = time.perf_counter()
        cafe = CafeMode.from_flags(args.cafe, args.control_h0)
        runtime = Runtime(amp=not args.no_amp, channels_last=args.channels_last, compile=args.compile,
                          workers=args.workers, sync_bn=args.sync_bn)
        result = run_stage(config, args.stage, parent=args.parent, out=args.out, limit=args.limit,
                           data_root=args.data_root, device=device, progress=not args.quiet,
                           command=_command_line(), defense=args.defense,
                           cafe=cafe, amr=args.amr, std_model=args.std_model, runtime=runtime)
        if distributed.is_main():
            print(f"wrote {result.card['weights']} (epoch {result.card['epoch_selected']} selected; "
                  f"{time.perf_counter() - started:.0f} s this run)")
            print(json.dumps(result.card["metrics"], indent=2))
    finally:
        distributed.teardown()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.grid:
        return cmd_evaluate_grid(args)
    from . import distributed

    device = _setup_ranks(args)
    try:
        return _evaluate_checkpoint(args, device)
    finally:
        distributed.teardown()


def _evaluate_checkpoint(args: argparse.Namespace, device: torch.device) -> int:
    """``evaluate --checkpoint``; under torchrun the batches are shared out and rank 0 writes."""
    from . import distributed
    from .checkpoints import load_backbone
    from .data import load_split
    from .evaluate import evaluate_attacks
    from .provenance import provenance, repo_relative
    from .reporting import eval_markdown
    from .serialization import atomic_write_text

    model, card = load_backbone(args.checkpoint, device=device)
    eps = card["eps"] if args.eps is None else args.eps
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    cfg = card["config"]
    dataset = load_split(card["dataset"], args.split, args.data_root, cfg["n_val"], cfg["seed"], limit=args.n)
    out = Path(args.out or f"benchmarks/results/eval_{card.get('config_name', 'model')}_{card['stage']}.json")
    state = out.with_suffix(".state.json")
    started = time.perf_counter()
    main = distributed.is_main()
    result = evaluate_attacks(model, dataset, attacks, eps, args.seed, args.batch_size or 500, device,
                              _pairs(args.limit), state, _pairs(args.steps), progress=main and not args.quiet)
    if not main:
        return 0
    made = provenance(_command_line())
    report = {"checkpoint": repo_relative(args.checkpoint), "sha256": card["sha256"], "stage": card["stage"],
              "dataset": card["dataset"], "backbone": card["backbone"], "split": args.split, "eps": eps,
              "seed": args.seed, "accuracy": result["accuracy"], "n_images": result["n_images"],
              "steps": _pairs(args.steps), "seconds": result["seconds"],
              "wall_seconds_this_run": round(time.perf_counter() - started, 1),
              "versions": made["versions"], "command": made["command"], "hardware": made["hardware"]}
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    table = eval_markdown(report)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    state.unlink(missing_ok=True)
    print(table)
    print(f"wrote {out}")
    return 0


def cmd_evaluate_grid(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data import load_split
    from .grid import evaluate_grid
    from .grid_markdown import robustness_markdown
    from .grid_settings import PHASES, GridSettings

    config = load_config(args.grid)
    if args.prune_state:
        return _prune_grid_state(config, args)
    device = _setup(args)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise SystemExit(f"unknown phase(s) {unknown}; known: {', '.join(PHASES)}")
    dataset = load_split(config["dataset"], "test", args.data_root, config["n_val"], config["seed"], limit=args.n)
    defenses = [d.strip() for d in args.defenses.split(",")] if args.defenses else None
    # The recipe's [evaluation] tables are the defaults; flags given here override them per attack.
    settings = GridSettings.from_recipe(config, limits=_pairs(args.limit), steps=_pairs(args.steps),
                                        curve_n=_pairs(args.curve_n), batch_size=args.batch_size,
                                        batch_sizes=_pairs(args.attack_batch_size), seed=args.seed,
                                        curve_attacks=[a.strip() for a in args.curve_attacks.split(",") if a.strip()])
    labels = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    result = evaluate_grid(config, dataset, settings, phases=phases, defenses=defenses, labels=labels, out=args.out,
                           device=device, progress=not args.quiet, command=_command_line())
    print(robustness_markdown(result))
    return 0


def _prune_grid_state(config: dict, args: argparse.Namespace) -> int:
    """``evaluate --grid CONFIG --prune-state [--yes]``: list (and with --yes remove) stale state."""
    from .checkpoints import CheckpointError
    from .grid import grid_result_path, grid_state_dir, stale_grid_state

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


def _fig3_for(bundle, test, args: argparse.Namespace, path: Path, device: torch.device) -> Path:
    """Fig. 3-style grid for ``args.figure_n`` test images: by default the first ones the attack
    fools (correct when clean, wrong when attacked), as in the paper's figure."""
    from .attacks import build_attack
    from .causal import causal_view
    from .explain import feature_inversion, fig3_grid, fig3_targets, make_start

    card = bundle.card
    eps = card["eps"] if args.eps is None else args.eps
    attacker = build_attack(args.attack, bundle.backbone, eps, args.steps, args.seed, bundle.backbone.num_classes)
    pool = test[list(range(min(len(test), 50 * args.figure_n)))]
    images, labels = pool[0].to(device), pool[1].to(device)
    torch.manual_seed(args.seed)
    adversarial = attacker(images, labels)
    with torch.no_grad():
        fooled = (bundle.backbone(images).argmax(1) == labels) & (bundle.backbone(adversarial).argmax(1) != labels)
    chosen = (fooled.nonzero().flatten() if args.figure_select == "fooled" else torch.arange(len(labels)))
    chosen = chosen[: args.figure_n]
    images, labels, adversarial = images[chosen], labels[chosen], adversarial[chosen]
    view = causal_view(bundle.backbone, bundle.causal_estimator, bundle.counterfactual_generator, images, adversarial)
    # Same grey start for every column, so each picture shows what its feature alone encodes.
    start = make_start(tuple(images.shape), seed=args.seed, device=images.device)
    inversions = feature_inversion(bundle.backbone, fig3_targets(view), start, seed=args.seed)
    what = "images the attack fools" if args.figure_select == "fooled" else "first test images"
    return fig3_grid(images, inversions, labels, test.class_names, path,
                     title=f"{card['dataset']} {card['backbone']}: feature inversions under "
                           f"{args.attack}-{args.steps} ({what})")


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import causal_analysis, default_eps_inv, load_amr
    from .data import load_split
    from .provenance import provenance, repo_relative
    from .reporting import causal_markdown
    from .serialization import atomic_write_text

    if args.from_report:
        return cmd_analyze_report(args)
    if not args.amr:
        raise SystemExit("analyze needs --amr (or --from-report)")
    device = _setup(args)
    bundle = load_amr(args.amr, device)
    card = bundle.card
    cfg = card["config"]
    config_name = card.get("config_name") or "model"
    eps_inv = args.eps_inv if args.eps_inv is not None else default_eps_inv(card)
    test = load_split(card["dataset"], "test", args.data_root, cfg["n_val"], cfg["seed"], limit=args.n)
    if args.figure_only:
        out = Path(args.out or f"benchmarks/results/causal_{config_name}.json")
        figure = _fig3_for(bundle, test, args, out.with_name(out.stem + "_fig3.png"), device)
        if out.is_file():  # record how the figure beside the results was made
            saved = json.loads(out.read_text())
            saved.update(figure=str(figure), figure_command=_command_line())
            atomic_write_text(out, json.dumps(saved, indent=2) + "\n")
        print(f"wrote {figure}")
        return 0
    common = dict(attack=args.attack, eps=args.eps, steps=args.steps, inversion_steps=args.inversion_steps,
                  seed=args.seed, batch_size=args.batch_size, device=device, progress=not args.quiet)
    started = time.perf_counter()
    sweep = []
    for value in [float(v) for v in args.sweep_eps_inv.split(",") if v.strip()]:
        part = causal_analysis(bundle, test.subset(torch.arange(min(args.sweep_n, len(test)))), eps_inv=value, **common)
        sweep.append({"eps_inv": value, "kl_x1000": part["kl_x1000"], "inverted_accuracy": part["accuracy"]["inverted"],
                      "h_zero_kl_x1000": part["controls"]["h_zero"]["kl_x1000"], "n_images": part["n_images"]})
    result = causal_analysis(bundle, test, eps_inv=eps_inv, **common)
    result.update({"eps_inv_sweep": sweep, "checkpoint": repo_relative(args.amr), "sha256": card["sha256"],
                   "parent": card["parent"], "dataset": card["dataset"], "backbone": card["backbone"],
                   "split": "test", "seconds": round(time.perf_counter() - started, 1),
                   **provenance(_command_line())})
    out = Path(args.out or f"benchmarks/results/causal_{config_name}.json")
    if args.figure_n > 0:
        result["figure"] = str(_fig3_for(bundle, test, args, out.with_name(out.stem + "_fig3.png"), device))
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = causal_markdown(result)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    print(table)
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import pipeline_steps, run_pipeline, stale_reason

    device = _setup(args)
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
        cmd_analyze(build_parser().parse_args(argv + common))

    def evaluate() -> None:
        argv = ["evaluate", "--grid", args.config]
        for flag, table in (("--limit", "limits"), ("--steps", "steps"), ("--curve-n", "curve_n")):
            for key, value in evaluation.get(table, {}).items():
                argv += [flag, f"{key}={value}"]
        cmd_evaluate_grid(build_parser().parse_args(argv + common))

    split = lambda text: [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
    started = time.perf_counter()
    records = run_pipeline(config, only=split(args.only), skip=split(args.skip), device=device,
                           progress=not args.quiet, command=_command_line(), data_root=args.data_root,
                           run_analysis=analyze, run_evaluation=evaluate)
    for record in records:
        print(f"{record['step']:28s} {record['action']:8s} {record['seconds']:8.0f} s  {record['reason']}")
    print(f"pipeline: {time.perf_counter() - started:.0f} s")
    return 0


def cmd_analyze_report(args: argparse.Namespace) -> int:
    """``analyze --from-report``: rerun an app report and say whether every number matches."""
    from .analysis import load_amr
    from .checkpoints import CheckpointError
    from .compare import DefenseSet
    from .data import get_info
    from .predict import checkpoint_dir
    from .report import read_report, rerun_report
    from .serialization import atomic_write_text

    device = _setup(args)
    try:
        report = read_report(args.from_report)
        folder = checkpoint_dir(args.checkpoints or args.amr and Path(args.amr).parent)
        bundle = load_amr(Path(args.amr) if args.amr else folder / "amr.safetensors", device)
        info = get_info(bundle.card["dataset"])
        defenses = DefenseSet(folder, device) if report.get("defenses") else None
        new, differences = rerun_report(report, bundle, defenses, info.class_names, info.channels)
    except (ValueError, CheckpointError) as err:
        raise SystemExit(f"cannot rerun {args.from_report}: {err}") from None
    out = Path(args.out) if args.out else Path(args.from_report).with_name(Path(args.from_report).stem + "_rerun.json")
    atomic_write_text(out, json.dumps(new, indent=2) + "\n")
    for name, view in new["numbers"]["predictions"].items():
        print(f"{name:15s} {view['class_name']:15s} {100 * view['confidence']:5.1f}%")
    print("KL x1000: " + ", ".join(f"{k} {v:.2f}" for k, v in new["numbers"]["kl_x1000"].items()))
    if differences:
        print("DIFFERENT from the report:\n  " + "\n  ".join(differences))
        return 1
    print(f"reproduced: every prediction and KL matches the report (wrote {out})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .reporting import causal_markdown, eval_markdown
    from .serialization import atomic_write_text

    path = Path(args.json)
    result = json.loads(path.read_text())
    text = causal_markdown(result) if "kl_x1000" in result else eval_markdown(result)
    atomic_write_text(path.with_suffix(".md"), text + "\n")
    print(text)
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


def cmd_ood(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ood import fit_checkpoint_set

    device = _setup(args)
    card = fit_checkpoint_set(load_config(args.config), args.parent, args.out, args.limit, args.data_root, device,
                              _command_line())
    print(f"threshold {card['threshold']:.3f}: {100 * card['metrics']['val_pass_rate']:.2f}% of "
          f"{card['n_val_images']} validation images pass; fitted on {card['n_train_images']} training images "
          f"in {card['history'][0]['seconds']:.0f} s; wrote {card['weights']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .distributed import env_world

    args = build_parser().parse_args(argv)
    if env_world().size > 1 and not (args.command == "train" or (args.command == "evaluate" and not args.grid)):
        raise SystemExit(f"'{args.command}' runs as one process; under torchrun only 'train' and "
                         "'evaluate --checkpoint' are supported")
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "export-examples": cmd_export_examples,
                "analyze": cmd_analyze, "report": cmd_report, "pipeline": cmd_pipeline, "ood": cmd_ood}
    return handlers[args.command](args)
