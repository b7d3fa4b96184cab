"""Load test: many concurrent visitors running the full Explore analysis against a local app.

Starts ``python app.py`` on 127.0.0.1 (free port), then C gradio_client sessions (threads) each
send R Explore requests back to back (example images in turn, PGD-10 at the checkpoint's eps)
and fetch the answer's images over one kept-alive connection, as a browser does (see
app_latency.py for why not gradio_client's own per-file download).
Bounded: it stops by itself after C x R requests or --max-seconds. The server's peak resident
memory is read from /proc/<pid>/status (VmHWM). Writes benchmarks/results/load.json + .md.

    python benchmarks/load_test.py --clients 20 --requests 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from benchmarks import load_app
from benchmarks.app_latency import fetch_outputs, free_port, percentile, wait_until_up
from cafe_core.checkpoints import hardware, library_versions, read_card
from cafe_core.predict import checkpoint_dir
from cafe_core.reporting import markdown_table
from cafe_core.serialization import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process and its children, in MiB (Linux /proc)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.is_file():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        status = Path(f"/proc/{p}/status")
        if status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=1200)
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    args = parser.parse_args()
    import gradio_client

    app = load_app()  # for the example list and defaults only; the server is a separate process

    folder = checkpoint_dir(args.checkpoints)
    eps_255 = round(255 * read_card(folder / "adv.safetensors")["eps"])
    port = free_port()
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1"]
    if args.checkpoints:
        command += ["--checkpoints", args.checkpoints]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + args.max_seconds
    peak = 0.0
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, process, 120)

        def visitor(index: int) -> None:
            client = gradio_client.Client(url, verbose=False, download_files=False)
            http = httpx.Client(timeout=120)
            for r in range(args.requests):
                if time.perf_counter() > deadline:
                    return
                example = app.EXAMPLES[(index + r) % len(app.EXAMPLES)]
                t0 = time.perf_counter()
                try:
                    out = client.predict(folder.name, gradio_client.handle_file(example), "pgd", eps_255, args.steps,
                                         index * 1000 + r, "none", False, api_name="/explore")
                    fetch_outputs(http, out, url)
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except Exception as err:  # counted, not raised: the test reports errors
                    with lock:
                        errors.append(f"{type(err).__name__}: {err}"[:200])

        started = time.perf_counter()
        server_cpu_start, client_cpu_start = cpu_seconds(process.pid), cpu_seconds(os.getpid())
        threads = [threading.Thread(target=visitor, args=(i,), daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, peak_rss_mb(process.pid))
            time.sleep(0.5)
        wall = time.perf_counter() - started
        peak = max(peak, peak_rss_mb(process.pid))
        server_cpu = cpu_seconds(process.pid) - server_cpu_start
        client_cpu = cpu_seconds(os.getpid()) - client_cpu_start
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = {"clients": args.clients, "requests": len(latencies) + len(errors), "errors": len(errors),
              "p50_s": statistics.median(latencies) if latencies else None,
              "p95_s": percentile(latencies, 95) if latencies else None,
              "max_s": max(latencies) if latencies else None, "max_rss_mb": round(peak, 1),
              "throughput_rps": len(latencies) / wall,
              "server_cpu_s_per_request": round(server_cpu / max(1, len(latencies)), 3),
              "client_cpu_s_per_request": round(client_cpu / max(1, len(latencies)), 3), "wall_s": round(wall, 1), "error_samples": errors[:5],
              "requests_per_client": args.requests, "attack": f"pgd-{args.steps}",
              "targets": {"errors": 0, "p95_s": 15, "max_rss_mb": 3072}, "hardware": hardware(),
              "versions": library_versions(),
              "command": " ".join(["python", "benchmarks/load_test.py", *sys.argv[1:]])}
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(["clients", "requests", "errors", "p50 s", "p95 s", "max RSS MB", "requests/s"],
                           [[str(result["clients"]), str(result["requests"]), str(result["errors"]),
                             f"{result['p50_s']:.2f}" if latencies else "-", f"{result['p95_s']:.2f}" if latencies else "-",
                             f"{peak:.0f}", f"{result['throughput_rps']:.2f}"]])
    atomic_write_text(out.with_suffix(".md"), f"{args.clients} concurrent sessions x {args.requests} Explore requests "
                      f"(PGD-{args.steps}, every defense), {hardware()}. Targets: 0 errors, p95 <= 15 s, RSS <= 3 GB.\n\n"
                      f"{table}\n")
    print(table)


if __name__ == "__main__":
    main()
