"""``python -m cafe_core ood``: fit the out-of-distribution detector of a checkpoint set."""
from __future__ import annotations

import argparse

from .common import command_line, setup


def run(args: argparse.Namespace) -> int:
    from ..evaluation.ood import fit_checkpoint_set
    from ..io.config import load_config

    device = setup(args)
    card = fit_checkpoint_set(load_config(args.config), args.parent, args.out, args.limit, args.data_root, device,
                              command_line())
    print(f"threshold {card['threshold']:.3f}: {100 * card['metrics']['val_pass_rate']:.2f}% of "
          f"{card['n_val_images']} validation images pass; fitted on {card['n_train_images']} training images "
          f"in {card['history'][0]['seconds']:.0f} s; wrote {card['weights']}")
    return 0
