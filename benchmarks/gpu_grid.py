"""The robustness grid of a config on one GPU inside a fixed time budget, one process per model.

Every grid row runs as its own ``python -m cafe_core evaluate --grid CONFIG --models ROW``
process, all at once (a lite model alone cannot fill a GPU between its Python steps), writing the
same resumable per-batch state as CPU runs (benchmarks/results/state/robustness_<config>/). Each
row goes through ``--rounds`` (default: every attack but AutoAttack on the config's images with
AutoAttack on the first 1,000, then the eps curves, then AutoAttack on all 10,000), so a budget
that runs out leaves every row with comparable partial results. A failed process (say, out of GPU
memory) is restarted and resumes. Every ``--pack-every`` seconds the state and the logs are packed
into ``OUT_DIR/grid_state.tar.gz`` (atomically), so whatever the budget allows comes back; when it
is spent the processes are stopped. ``--throughput`` first runs benchmarks/gpu_throughput.py
(its timings need the GPU to itself).

Measured on one H100 (2026-11-27, 11 lite rows at once, batches of 2,000, cuDNN TF32 on): clean,
FGSM, PGD-30 and the Square probe 52 s, then CW-100 + APGD-CE-100 + APGD-DLR-100 on 10,000 images
196 s, for all rows together; AutoAttack did not finish 1,000 images per row within 200 s. On one
H200 with ``--parallel 4`` and AutoAttack batches of 1,000, four rows at once took ~77 s per 1,000
images each (GPU 99% busy; two rows at once ~43 s): ~20 s of GPU time per 1,000 images per lite row.
``--parallel K`` keeps K rows running and gives each free slot to the row with the fewest rounds
done, so the CAFE/baseline pairs end a budget with the same images.

    python benchmarks/gpu_grid.py --out-dir $OUT --budget 480 --throughput "--batch-size 128 --iters 20"
    python benchmarks/gpu_grid.py --out-dir $OUT --budget 520 --parallel 4 \
        --rounds "autoattack@4000;autoattack@5000" --extra "--attack-batch-size autoattack=1000"
    tar xzf grid_state.tar.gz    # here, at the repository root; then assemble the table:
    python -m cafe_core evaluate --grid fashion_lite --phases ""

Smoke run on a CPU: ``--models defense_adv --rounds fast --extra "--n 40 --limit square=20"``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from cafe_core.evaluation.grid_rows import grid_models
from cafe_core.io.config import load_config
from cafe_core.io.serialization import atomic_write

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_ROUNDS = "fast,strong,autoattack@1000;curves;autoattack@all"


def round_args(spec: str, n_test: int) -> list[str]:
    """CLI arguments of one round: ``phases``, ``phases@N`` (AutoAttack on the first N images) or
    ``phases@all`` (AutoAttack on all ``n_test`` images)."""
    phases, _, scope = spec.partition("@")
    if not scope:
        return ["--phases", phases]
    count = n_test if scope == "all" else int(scope)
    return ["--phases", phases, "--limit", f"autoattack={count}"]


def pack(state_dir: Path, log_dir: Path, extra: list[Path], target: Path) -> None:
    """State files, logs and ``extra`` files into one tar.gz, written atomically."""

    def write(tmp: str) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in [*sorted(state_dir.glob("*.json")), *sorted(log_dir.glob("*.log")), *extra]:
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name)

    atomic_write(target, write)


def progress_line(state_dir: Path, eps: float) -> str:
    """Images stored per row for AutoAttack at ``eps`` (the longest entry, any batch size)."""
    parts = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        done = max((sum(map(len, v["batches"].values())) for k, v in state.items()
                    if k != "sha256" and json.loads(k)[:2] == ["autoattack", eps]), default=0)
        parts.append(f"{path.stem.removeprefix('defense_')}:{done}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """The command line above (``argv`` defaults to ``sys.argv[1:]``); the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="fashion_lite")
    parser.add_argument("--out-dir", required=True, help="where grid_state.tar.gz is written")
    parser.add_argument("--results", default=None,
                        help="grid JSON (default benchmarks/results/robustness_<config>.json); its state "
                             "folder is state/<its name> beside it")
    parser.add_argument("--budget", type=float, default=480, help="seconds for everything (then stop)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's [evaluation] batch_size")
    parser.add_argument("--rounds", default=DEFAULT_ROUNDS, help="';'-separated rounds of phases per row (see round_args)")
    parser.add_argument("--all-images", type=int, default=10_000, help="test images for AutoAttack@all")
    parser.add_argument("--models", default=None, help="comma list of rows (default: every grid row)")
    parser.add_argument("--extra", default="", help="more arguments for every evaluate command")
    parser.add_argument("--throughput", default=None, help="arguments for benchmarks/gpu_throughput.py (run first)")
    parser.add_argument("--throughput-timeout", type=float, default=120, help="seconds before it is stopped")
    parser.add_argument("--parallel", type=int, default=None,
                        help="rows evaluated at once (default: all); the next slot goes to the row with the "
                             "fewest rounds done, so every row advances evenly")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--pack-every", type=float, default=20)
    args = parser.parse_args(argv)

    started = time.monotonic()
    deadline = started + args.budget
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    results = Path(args.results) if args.results else ROOT / "benchmarks" / "results" / f"robustness_{config['name']}.json"
    state_dir = results.parent / "state" / results.stem
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = (ROOT / "logs" if args.results is None else results.parent) / "gpu_grid_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "grid_state.tar.gz"
    extra_files: list[Path] = []
    env = {**os.environ, "CAFE_FAST_QUERIES": os.environ.get("CAFE_FAST_QUERIES", "0"), "PYTHONUNBUFFERED": "1",
           "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")}

    if args.throughput is not None:
        log = log_dir / "gpu_throughput.log"
        command = [sys.executable, "benchmarks/gpu_throughput.py", *shlex.split(args.throughput)]
        print("$", shlex.join(command), flush=True)
        with open(log, "w") as handle:
            try:
                code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                      timeout=args.throughput_timeout).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        print(f"gpu_throughput: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        extra_files += sorted((ROOT / "benchmarks" / "results").glob("gpu_throughput_*"))

    rows = [m.label for m in grid_models(config["checkpoint_dir"]) if m.path.is_file()]
    if args.models:
        rows = [row for row in rows if row in args.models.split(",")]
    rounds = [r.strip() for r in args.rounds.split(";") if r.strip()]
    n_test = args.all_images
    base = [sys.executable, "-m", "cafe_core", "evaluate", "--grid", args.config, "--quiet",
            *(["--batch-size", str(args.batch_size)] if args.batch_size else []), "--out", str(results),
            *shlex.split(args.extra)]
    plan = {row: [base + ["--models", row] + round_args(r, n_test) for r in rounds] for row in rows}
    print("rounds per row:", " | ".join(shlex.join(round_args(r, n_test)) for r in rounds), flush=True)
    running: dict[str, subprocess.Popen] = {}
    position = {row: 0 for row in rows}
    failures = {row: 0 for row in rows}
    handles = {}

    def launch(row: str) -> None:
        handles[row] = open(log_dir / f"{row}.log", "a")
        handles[row].write(f"\n$ {shlex.join(plan[row][position[row]])}\n")
        handles[row].flush()
        running[row] = subprocess.Popen(plan[row][position[row]], cwd=ROOT, env=env, stdout=handles[row],
                                        stderr=subprocess.STDOUT, start_new_session=True)

    slots = args.parallel or len(rows)

    def fill_slots() -> None:
        """Start the rows with the fewest rounds done (then in grid order) while slots are free."""
        ready = [row for row in rows if row not in running and position[row] < len(rounds)
                 and failures[row] <= args.retries]
        for row in sorted(ready, key=lambda r: position[r])[:max(slots - len(running), 0)]:
            launch(row)

    fill_slots()
    last_pack = time.monotonic()
    while running and time.monotonic() < deadline:
        time.sleep(1)
        for row, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            handles[row].close()
            del running[row]
            elapsed = time.monotonic() - started
            if code == 0:
                print(f"{elapsed:6.0f} s  {row}: round {position[row] + 1}/{len(rounds)} done", flush=True)
                position[row] += 1
            else:
                failures[row] += 1
                print(f"{elapsed:6.0f} s  {row}: exit {code} (failure {failures[row]}); see {log_dir / (row + '.log')}",
                      flush=True)
        fill_slots()
        if time.monotonic() - last_pack > args.pack_every:
            pack(state_dir, log_dir, extra_files, target)
            print(f"{time.monotonic() - started:6.0f} s  autoattack images stored: {progress_line(state_dir, config['eps'])}", flush=True)
            last_pack = time.monotonic()
    for proc in running.values():  # budget spent: stop what is left (finished batches are stored)
        with contextlib.suppress(ProcessLookupError):  # it may have ended since the last poll
            os.killpg(proc.pid, 15)
    for proc in running.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
    pack(state_dir, log_dir, extra_files, target)
    unfinished = [row for row in rows if position[row] < len(rounds)]
    print(f"{time.monotonic() - started:6.0f} s  packed {target}; rows with rounds left: {unfinished or 'none'}")
    print(f"autoattack images stored: {progress_line(state_dir, config['eps'])}")
    return 0 if not unfinished else 3


if __name__ == "__main__":
    sys.exit(main())
