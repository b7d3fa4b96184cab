"""``python -m cafe_core`` in float64, for tests/test_distributed.py (run directly or by torchrun).

float32 rounding alone moves two single-process runs apart (with 1 vs 2 CPU threads: ~10% of
a short run's weight update), so comparing a torchrun run with a single process in float32
would hide any real difference; in float64 what is left to compare is the computation itself.
"""
import sys

import torch

from cafe_core.cli import main

if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    sys.exit(main(sys.argv[1:]))
