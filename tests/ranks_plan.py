"""The work of tests/test_distributed.py on each torchrun rank, in one launch.

``python -m torch.distributed.run --nproc_per_node 2 tests/ranks_plan.py PLAN.json`` runs the
steps PLAN lists, in order, in the same two rank processes: ``["collectives"]`` (the helpers of
tests/distributed_checks.py), then ``["cli", dtype, argv...]`` (``python -m cafe_core argv`` with
that default dtype). One launch instead of one per step: each launch starts three Python
processes that import torch (the launcher and two ranks), which costs more here than the
steps themselves. The ranks join the process group once, with the helper the CLI uses
(``distributed.init``), and leave it after the last step: the CLI's own ``init`` finds the group
joined, and its ``teardown`` is held back until then, because torchrun's rendezvous store does
not take a second join of the same ranks.

Why float64 for the training steps: float32 rounding alone moves two single-process runs apart
(with 1 vs 2 CPU threads: ~10% of a short run's weight update), so comparing a torchrun run with
a single process in float32 would hide any real difference; in float64 what is left to compare
is the computation itself.
"""
import json
import sys
from pathlib import Path

import torch

from cafe_core import distributed
from cafe_core.cli import main


def run_collectives() -> None:
    from tests.distributed_checks import check_all

    check_all(distributed.world())


def run_cli(dtype: str, argv: list[str]) -> None:
    """``python -m cafe_core argv`` in this process with the default dtype ``dtype`` ("float64"),
    restored after; used by the ranks and by the tests' single-process runs."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        assert main(argv) == 0, argv
    finally:
        torch.set_default_dtype(before)


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text())
    leave = distributed.teardown
    distributed.init("cpu")
    distributed.teardown = lambda: None  # the CLI runs' teardown: see the docstring
    try:
        for i, (kind, *args) in enumerate(plan):
            if kind == "collectives":
                run_collectives()
            else:
                run_cli(args[0], args[1:])
            print(f"rank {distributed.world().rank}: step {i} ({kind}) done", flush=True)
    finally:
        leave()
