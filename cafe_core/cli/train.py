"""``python -m cafe_core train``: one training stage, its checkpoint and card (also under torchrun)."""
from __future__ import annotations

import argparse
import json
import time

from .common import command_line, setup_ranks


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..defenses.cafe_mode import CafeMode
    from ..io.config import load_config
    from ..training.stages import run_stage
    from ..training.trainer import Runtime

    try:
        cafe = CafeMode.from_flags(args.cafe, args.control_h0)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    config = load_config(args.config, args.overrides)
    device = setup_ranks(args)
    try:
        started = time.perf_counter()
        runtime = Runtime(amp=not args.no_amp, channels_last=args.channels_last, compile=args.compile,
                          workers=args.workers, sync_bn=args.sync_bn)
        result = run_stage(config, args.stage, parent=args.parent, out=args.out, limit=args.limit,
                           data_root=args.data_root, device=device, progress=not args.quiet,
                           command=command_line(), defense=args.defense,
                           cafe=cafe, amr=args.amr, std_model=args.std_model, runtime=runtime)
        if distributed.is_main():
            print(f"wrote {result.card['weights']} (epoch {result.card['epoch_selected']} selected; "
                  f"{time.perf_counter() - started:.0f} s this run)")
            print(json.dumps(result.card["metrics"], indent=2))
    finally:
        distributed.teardown()
    return 0
