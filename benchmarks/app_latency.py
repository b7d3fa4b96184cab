"""Latency of the app's full Explore analysis, through its public API, on a locally launched app.

Starts ``python app.py`` on 127.0.0.1 (a free port), measures the time until it answers, then
sends N Explore requests with gradio_client (the example images in turn, default settings:
PGD-10 at the checkpoint's eps, every defense of the set) and writes
benchmarks/results/app_latency.json + .md.

A request's time runs from the upload of the image until every image of the answer has been
fetched, as a browser does it: over one kept-alive HTTP connection. (gradio_client's own
download opens a new HTTP client, with a new SSL context, for every file: ~30 ms per 28x28
panel here, a cost of that library that no browser pays; it is measured separately on a few
requests and written as ``explore_p50_gradio_download_s``.)

    python benchmarks/app_latency.py --requests 50
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from benchmarks.gradio_http import GradioHTTP
from cafe_core.causal.feature_inversion import APP_INVERSION
from cafe_core.io.checkpoints import read_card
from cafe_core.io.provenance import command_line, hardware, provenance, repo_relative
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.serving.handlers import EXAMPLE_DIR
from cafe_core.serving.predict import checkpoint_dir

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the app did not answer within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--library-requests", type=int, default=10,
                        help="extra requests timed with gradio_client's own per-file download")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "app_latency.json"))
    args = parser.parse_args()
    import gradio_client

    examples = [str(p) for p in sorted(EXAMPLE_DIR.glob("*.png"))]

    port = free_port()
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port)]
    if args.checkpoints:
        command += ["--checkpoints", args.checkpoints]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        startup = wait_until_up(url, process, 120)
        client = gradio_client.Client(url, verbose=False, download_files=False)
        browser = GradioHTTP(url, timeout=60)  # fetches each answer's pictures, as a browser does
        folder = checkpoint_dir(args.checkpoints)
        eps_255 = round(255 * read_card(folder / "adv.safetensors")["eps"])

        # Seeds from 1: the app analyses the gallery at seed 0 at start-up, and those answers come
        # from its cache; this benchmark times the full analysis.
        def explore(c, i: int):
            return c.predict(folder.name, gradio_client.handle_file(examples[i % len(examples)]), "adv", "pgd",
                             eps_255, args.steps, i + 1, "none", False, api_name="/explore")

        times, defenses, files = [], None, 0
        for i in range(args.requests):
            t0 = time.perf_counter()
            out = explore(client, i)
            files = browser.fetch_files(out)
            times.append(time.perf_counter() - t0)
            defenses = len(out[5]["data"])
        t0 = time.perf_counter()
        client.predict(folder.name, "adv", api_name="/attributions")
        attributions = time.perf_counter() - t0
        downloading = gradio_client.Client(url, verbose=False)  # the library's own per-file download
        library_times = []
        for i in range(args.library_requests):
            t0 = time.perf_counter()
            explore(downloading, i)
            library_times.append(time.perf_counter() - t0)
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = {"explore_p50_s": statistics.median(times), "explore_p95_s": percentile(times, 95),
              "explore_mean_s": statistics.fmean(times), "explore_max_s": max(times), "startup_s": startup,
              "process_start_to_ready_s": startup, "attributions_s": attributions, "requests": len(times),
              "defenses_per_request": defenses, "files_fetched_per_request": files,
              "explore_p50_gradio_download_s": statistics.median(library_times) if library_times else None,
              "gradio_download_requests": len(library_times), "attack": f"pgd-{args.steps}", "eps_255": eps_255,
              "feature_inversion_steps": APP_INVERSION.steps, "feature_inversion": asdict(APP_INVERSION), "target_p50_s": 1.0, "target_p95_s": 2.0,
              "checkpoints": repo_relative(folder), **provenance(command_line("benchmarks/app_latency.py")),
              "wall_s": time.perf_counter() - started}
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(["metric", "seconds", "target"],
                           [["startup", f"{startup:.2f}", "20"], ["explore p50", f"{result['explore_p50_s']:.2f}", "1.0"],
                            ["explore p95", f"{result['explore_p95_s']:.2f}", "2.0"],
                            ["attributions (after)", f"{attributions:.2f}", "-"]])
    atomic_write_text(out.with_suffix(".md"), f"App latency, {len(times)} Explore requests (PGD-{args.steps}, "
                      f"{defenses} defenses each), {hardware()}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
