"""``python -m cafe_core analyze``: the causal analysis of an AMR-GMM checkpoint with its Fig. 3-style grid,
or (``--from-report``) the rerun of an app report, number by number."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .common import command_line, setup

if TYPE_CHECKING:
    from ..causal.study import StudySettings


def run(args: argparse.Namespace) -> int:
    from ..causal.study import write_figure_only, write_study
    from ..io.reporting import causal_markdown

    if args.from_report:
        return rerun_report_command(args)
    if not args.amr:
        raise SystemExit("analyze needs --amr (or --from-report)")
    device = setup(args)
    where = dict(out=args.out, device=device, data_root=args.data_root, command=command_line())
    if args.figure_only:
        print(f"wrote {write_figure_only(args.amr, study_settings(args), **where)}")
        return 0
    result, out = write_study(args.amr, study_settings(args), progress=not args.quiet, **where)
    print(causal_markdown(result))
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return 0


def study_settings(args: argparse.Namespace) -> StudySettings:
    """The analysis settings from ``analyze``'s flags."""
    from ..causal.study import StudySettings

    return StudySettings(attack=args.attack, steps=args.steps, eps=args.eps, eps_inv=args.eps_inv,
                         inversion_steps=args.inversion_steps, seed=args.seed, batch_size=args.batch_size, n=args.n,
                         sweep_eps_inv=tuple(float(v) for v in args.sweep_eps_inv.split(",") if v.strip()),
                         sweep_n=args.sweep_n, figure_n=args.figure_n, figure_select=args.figure_select)


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
