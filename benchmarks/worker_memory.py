"""Memory of one analysis worker: spawned the app's way, and spawned re-running app.py as before.

The app's Explore analyses run in spawned worker processes (cafe_core.serving.workers). A spawned
child re-executes its parent's main script unless told otherwise; for ``python app.py`` that is
gradio, the page layout and every import of the app, none of which an analysis uses. The pool
names its own module as the children's main module instead (``_spawn_without_main_script``).

This script measures both ways in fresh processes, on the same checkpoint set and the same
gallery image: each child imports what a worker imports (``shipped``), or first runs app.py as
``__mp_main__`` exactly as multiprocessing's spawn does for a main script (``reimporting_app``),
then loads the set and runs the worker's warm-up analysis. It reports the resident memory
(VmRSS) and its peak (VmHWM) from /proc, whether gradio was imported, and how many modules were.

    python benchmarks/worker_memory.py [--checkpoints checkpoints/fashion_lite]

Writes benchmarks/results/worker_memory.json and .md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cafe_core.io.provenance import REPO_ROOT, provenance, repo_relative
from cafe_core.io.serialization import atomic_write_text

RESULTS = REPO_ROOT / "benchmarks" / "results"
MODES = {"shipped": "the app's way: the worker imports cafe_core.serving.workers only",
         "reimporting_app": "spawn's default: the worker first re-runs app.py as __mp_main__"}

# Runs in the child: what a worker process does before its first answer, then its memory.
CHILD = r"""
import json, runpy, sys
mode, folder, image_path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "reimporting_app":
    runpy.run_path("app.py", run_name="__mp_main__")
from cafe_core.serving import workers
from cafe_core.data.images import prepare_image
workers._init_worker(threads)
workers._warm_up(folder, prepare_image(image_path, 1, 28).tensor)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
mb = lambda key: round(int(status[key].split()[0]) / 1024, 1)
print(json.dumps({"rss_mb": mb("VmRSS"), "peak_rss_mb": mb("VmHWM"), "gradio_imported": "gradio" in sys.modules,
                  "modules": len(sys.modules)}))
"""


def measure(mode: str, folder: Path, image: Path, threads: int) -> dict:
    """One fresh process in ``mode``; its memory after loading the set and one warm-up analysis."""
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(image), str(threads)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return {"mode": mode, "how": MODES[mode], **json.loads(done.stdout.strip().splitlines()[-1])}


def markdown(result: dict) -> str:
    lines = ["| worker | RSS MB | peak RSS MB | gradio imported | modules |", "|---|---|---|---|---|"]
    lines += [f"| {r['mode']} ({r['how']}) | {r['rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{'yes' if r['gradio_imported'] else 'no'} | {r['modules']} |" for r in result["workers"]]
    lines += ["", f"Saved per worker: {result['saved_mb_per_worker']:.0f} MB (RSS after the warm-up analysis); "
                  f"{result['n_workers_default']} workers by default. {result['hardware']}.",
              "", f"Command: `{result['command']}`"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from cafe_core.serving.gallery import read_manifest
    from cafe_core.serving.settings import WORKERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints/fashion_lite")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (the app's default: 1)")
    parser.add_argument("--out", default=str(RESULTS / "worker_memory.json"))
    args = parser.parse_args(argv)
    folder = Path(args.checkpoints)
    examples = REPO_ROOT / "assets" / "examples"
    image = examples / read_manifest(examples)["examples"][0]["file"]
    workers = [measure(mode, folder, image, args.threads) for mode in MODES]
    by_mode = {w["mode"]: w for w in workers}
    result = {"checkpoint_set": repo_relative(folder), "image": repo_relative(image), "threads": args.threads,
              "workers": workers, "n_workers_default": WORKERS,
              "saved_mb_per_worker": round(by_mode["reimporting_app"]["rss_mb"] - by_mode["shipped"]["rss_mb"], 1),
              **provenance()}
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
