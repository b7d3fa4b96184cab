"""``python -m cafe_core analyze``: the causal analysis of an AMR-GMM checkpoint with its Fig. 3-style grid,
or (``--from-report``) the rerun of an app report, number by number."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .common import command_line, setup


def run(args: argparse.Namespace) -> int:
    from ..causal.analysis import causal_analysis, default_eps_inv, load_amr
    from ..data.datasets import load_split
    from ..io.provenance import provenance, repo_relative
    from ..io.reporting import causal_markdown
    from ..io.serialization import atomic_write_text

    if args.from_report:
        return rerun_report_command(args)
    if not args.amr:
        raise SystemExit("analyze needs --amr (or --from-report)")
    device = setup(args)
    bundle = load_amr(args.amr, device)
    card = bundle.card
    cfg = card["config"]
    config_name = card.get("config_name") or "model"
    eps_inv = args.eps_inv if args.eps_inv is not None else default_eps_inv(card)
    test = load_split(card["dataset"], "test", args.data_root, cfg["n_val"], cfg["seed"], limit=args.n)
    if args.figure_only:
        out = Path(args.out or f"benchmarks/results/causal_{config_name}.json")
        figure = fig3_for(bundle, test, args, out.with_name(out.stem + "_fig3.png"), device)
        if out.is_file():  # record how the figure beside the results was made
            saved = json.loads(out.read_text())
            saved.update(figure=str(figure), figure_command=command_line())
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
                   **provenance(command_line())})
    out = Path(args.out or f"benchmarks/results/causal_{config_name}.json")
    if args.figure_n > 0:
        result["figure"] = str(fig3_for(bundle, test, args, out.with_name(out.stem + "_fig3.png"), device))
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = causal_markdown(result)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    print(table)
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return 0


def fig3_for(bundle, test, args: argparse.Namespace, path: Path, device: torch.device) -> Path:
    """Fig. 3-style grid for ``args.figure_n`` test images: by default the first ones the attack
    fools (correct when clean, wrong when attacked), as in the paper's figure."""
    from ..attacks.registry import build_attack
    from ..causal.feature_inversion import feature_inversion, fig3_grid, fig3_targets, make_start
    from ..causal.predictions import causal_view

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


def rerun_report_command(args: argparse.Namespace) -> int:
    """``analyze --from-report``: rerun an app report and say whether every number matches."""
    from ..causal.analysis import load_amr
    from ..data.datasets import get_info
    from ..io.checkpoints import CheckpointError
    from ..io.serialization import atomic_write_text
    from ..serving.compare import DefenseSet
    from ..serving.predict import checkpoint_dir
    from ..serving.report import read_report, rerun_report

    device = setup(args)
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
