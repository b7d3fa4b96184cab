"""Load test: many concurrent visitors of a locally launched app, through its public API.

Starts ``python app.py`` on 127.0.0.1 (a free port) in a subprocess, waits until it answers and
its start-up gallery analyses (the cache prefill) are done, then runs C visitor sessions
(threads of this process, each a benchmarks/gradio_http.GradioHTTP client: one kept-alive
connection, the same HTTP requests a browser sends) at once. Every request's time runs from the
upload of its image until every file of the answer has been fetched, as a browser shows it.

Two scenarios:

``--scenario explore`` (default; benchmarks/results/load.json): each session sends R Explore
requests back to back (gallery images in turn, PGD-10 at the set's eps, the robust network),
each with its own seed, so every request is computed (nothing is answered from the cache).

``--scenario classroom`` (benchmarks/results/load_classroom.json): a lesson replayed by a class.
Each session walks the five Learn steps (``/lesson``), explores three gallery images (a seeded
choice per session) at the app's default settings (``cafe_core.serving.settings.explore_defaults``), and
one session in five (sessions 0, 5, 10, ...) then uploads its own image (a gallery image
rotated, rescaled, shifted and noised on the fly, seeded, so its content is new) with its own eps.

Memory: the app's whole process tree (the server and its spawned worker processes) is sampled
every 0.2 s from /proc/<pid>/status (VmRSS); ``max_rss_mb`` is the largest sum over the tree
(the app's budget is 3,072 MB), and each process's sampled peak and kernel peak (VmHWM, which
includes start-up) are listed. Cache: ``cache_hit_rate`` comes from the app's ``/cache_stats``
endpoint (hits and misses of its result cache over the run); without that endpoint it is null,
and ``expected_cache_hit_rate`` (the fraction of requests whose image bytes and settings were
seen before, the start-up prefill included) estimates it from the client side. Bounded: it
stops by itself after its requests or --max-seconds. Run it niced on a shared machine.

    python benchmarks/load_test.py --clients 20 --requests 10
    python benchmarks/load_test.py --scenario classroom --clients 30
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx

from benchmarks.app_latency import free_port, percentile, wait_until_up
from benchmarks.gradio_http import GradioCallError, GradioHTTP
from cafe_core.io.checkpoints import read_card
from cafe_core.io.provenance import command_line, provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.serving.gallery import lesson_example as gallery_lesson_example
from cafe_core.serving.gallery import read_manifest
from cafe_core.serving.lesson import LESSON_TITLES
from cafe_core.serving.predict import checkpoint_dir
from cafe_core.serving.settings import DEFAULT_SEED, DEFAULT_STEPS, default_eps_255

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "assets" / "examples"
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE_EVERY_S = 0.2
GALLERY_PER_CLIENT = 3
UPLOAD_EVERY = 5           # sessions 0, UPLOAD_EVERY, 2 * UPLOAD_EVERY, ... upload their own image
#: /explore's API inputs in order: app.py's ``run.click`` inputs, i.e. the parameters of
#: cafe_core.serving.handlers.run_explore after ``ctx``, less ``trained`` (a gr.State, which the API leaves
#: out and the server fills with None).
EXPLORE_INPUTS = ("set_name", "image", "network", "attack", "eps_255", "steps", "seed", "target", "use_trained",
                  "auto_negate")
TARGETS = {"explore": {"errors": 0, "p95_s": 15, "max_rss_mb": 3072},
           "classroom": {"errors": 0, "p95_s": 3.0, "max_rss_mb": 3072}}


# ---------------------------------------------------------------- the app's processes (Linux /proc)

def process_tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants (from /proc/<pid>/task/*/children), parents first."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        if not Path(f"/proc/{p}").is_dir() or p in tree:
            continue
        tree.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return tree


def status_mb(pid: int, key: str) -> float | None:
    """A ``VmRSS``/``VmHWM``-style line of /proc/<pid>/status in MiB, None if gone (or a kernel thread)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_role(pid: int, root: int) -> str:
    """server, worker (a spawned multiprocessing child), resource_tracker or the program's name."""
    if pid == root:
        return "server"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "resource_tracker" in cmdline:
        return "resource_tracker"
    if "spawn_main" in cmdline or "--multiprocessing-fork" in cmdline:
        return "worker"
    return Path(cmdline.split(" ", 1)[0]).name or "?"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc/<pid>/stat), 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in process_tree(pid)}


class RssSampler(threading.Thread):
    """Samples the resident memory of a process tree every ``every`` seconds until ``stop()``.

    ``max_sum_mb``: the largest sum of VmRSS over the tree at one sample; ``peaks``: per pid, its
    role and its largest sampled VmRSS; ``vmhwm()``: each process's kernel-kept peak (VmHWM)."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY_S) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.every = pid, every
        self.max_sum_mb, self.samples = 0.0, 0
        self.peaks: dict[int, dict[str, Any]] = {}
        self._stop_event = threading.Event()

    def sample(self) -> float:
        total = 0.0
        for p in process_tree(self.pid):
            rss = status_mb(p, "VmRSS")
            if rss is None:
                continue
            total += rss
            entry = self.peaks.setdefault(p, {"pid": p, "role": "?", "peak_rss_mb": 0.0})
            entry["role"] = process_role(p, self.pid)  # each time: a child is first seen before its exec
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], rss)
        self.max_sum_mb = max(self.max_sum_mb, total)
        self.samples += 1
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.sample()

    def processes(self) -> list[dict[str, Any]]:
        """Per process: pid, role, sampled peak and (if still alive) VmHWM, rounded to 0.1 MB."""
        out = []
        for entry in self.peaks.values():
            hwm = status_mb(entry["pid"], "VmHWM")
            out.append({**entry, "peak_rss_mb": round(entry["peak_rss_mb"], 1),
                        "vmhwm_mb": None if hwm is None else round(hwm, 1)})
        return out


def snapshot_rss(pid: int) -> list[dict[str, Any]]:
    """VmRSS of every process of the tree now (pid, role, rss_mb)."""
    return [{"pid": p, "role": process_role(p, pid), "rss_mb": round(status_mb(p, "VmRSS") or 0.0, 1)}
            for p in process_tree(pid)]


# ---------------------------------------------------------------- what the sessions send

@dataclass(frozen=True)
class Step:
    """One request of a session: kind "lesson" (``title``), "gallery" or "upload" (``image``, ``eps_255``)."""

    kind: str
    title: str | None = None
    image: Path | None = None
    eps_255: int | None = None
    seed: int = DEFAULT_SEED


def gallery_examples(folder: Path = EXAMPLE_DIR) -> list[Path]:
    """The gallery as the app lists it: manifest.json's order, else the PNG files sorted."""
    manifest = read_manifest(folder)
    if manifest is not None:
        return [folder / e["file"] for e in manifest["examples"] if (folder / e["file"]).is_file()]
    return sorted(folder.glob("*.png"))


def lesson_example(examples: Sequence[Path], folder: Path = EXAMPLE_DIR) -> Path:
    """The lesson's image, by the app's rule (cafe_core.serving.gallery.lesson_example) on ``folder``'s manifest."""
    example = gallery_lesson_example(list(examples), read_manifest(folder))
    if example is None:
        raise ValueError("The example gallery is empty.")
    return example


def make_upload(source: Path, rng: random.Random, out_dir: Path, name: str) -> Path:
    """A visitor's own image: ``source`` enlarged (56-140 px), rotated (+-20 degrees), shifted and
    noised, on a dark background or (one in two) negated onto a light one like a product photo;
    deterministic for a seeded ``rng``; its bytes and its model input differ from ``source``'s."""
    import numpy as np
    from PIL import Image

    img = Image.open(source).convert("L")
    side = rng.randint(56, 140)
    img = img.resize((side, side), Image.BILINEAR).rotate(rng.uniform(-20, 20), Image.BILINEAR, fillcolor=0)
    a = np.asarray(img, dtype=np.float32)
    pad = rng.randint(4, side // 4)
    canvas = np.zeros((side + 2 * pad, side + 2 * pad), np.float32)
    dy, dx = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
    canvas[dy:dy + side, dx:dx + side] = a
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, canvas.shape)
    canvas = np.clip(canvas + noise, 0, 255)
    if rng.random() < 0.5:
        canvas = 255 - canvas
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    Image.fromarray(canvas.astype(np.uint8), "L").save(path)
    return path


def classroom_plan(index: int, examples: Sequence[Path], default_eps: int, upload_dir: Path,
                   seed: int = 0) -> list[Step]:
    """Session ``index``'s lesson: the five Learn steps in order, three distinct gallery images (a
    seeded choice), and for one session in five an own upload with its own eps (!= the default)."""
    rng = random.Random(f"classroom-{seed}-{index}")
    plan = [Step("lesson", title=title) for title in LESSON_TITLES]
    picks = rng.sample(range(len(examples)), min(GALLERY_PER_CLIENT, len(examples)))
    plan += [Step("gallery", image=examples[i], eps_255=default_eps) for i in picks]
    if index % UPLOAD_EVERY == 0:
        source = examples[rng.randrange(len(examples))]
        eps = rng.choice([e for e in range(4, 33) if e != default_eps])
        plan.append(Step("upload", image=make_upload(source, rng, upload_dir, f"upload_{seed}_{index}"), eps_255=eps))
    return plan


def explore_plan(index: int, examples: Sequence[Path], default_eps: int, requests: int) -> list[Step]:
    """The uncached scenario: gallery images in turn, each request its own seed (never the default
    seed 0, which the app's start-up prefill used)."""
    return [Step("explore", image=examples[(index + r) % len(examples)], eps_255=default_eps,
                 seed=1 + index * 1000 + r)
            for r in range(requests)]


def explore_args(set_name: str, image: Any, eps_255: int, seed: int, steps: int = DEFAULT_STEPS) -> tuple:
    """/explore's inputs (EXPLORE_INPUTS): the robust network, PGD, no target, the set's own h/g,
    light backgrounds negated (the app's default)."""
    return set_name, image, "adv", "pgd", eps_255, steps, seed, "none", False, True


def request_key(step: Step, steps: int, lesson_image: Path, default_eps: int) -> str:
    """What the app's result cache keys on, seen from the client: the image bytes and the settings
    (a lesson step analyses the lesson example at the defaults)."""
    if step.kind == "lesson":
        image, eps, seed = lesson_image, default_eps, DEFAULT_SEED
    else:
        image, eps, seed = step.image, step.eps_255, step.seed
    digest = hashlib.sha256(Path(image).read_bytes()).hexdigest()
    return f"{digest}|adv|pgd|{eps}|{steps}|{seed}|none"


def expected_hit_rate(keys_in_start_order: Sequence[str], prefilled: set[str]) -> float | None:
    """Fraction of requests whose key was seen before (prefill included). An upper bound of the
    real cache's rate: two identical requests in flight at once are both computed."""
    seen, hits = set(prefilled), 0
    for key in keys_in_start_order:
        hits += key in seen
        seen.add(key)
    return hits / len(keys_in_start_order) if keys_in_start_order else None


def latency_stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    return {"n": len(values), "p50_s": round(statistics.median(values), 3), "p95_s": round(percentile(list(values), 95), 3),
            "max_s": round(max(values), 3)}


# ---------------------------------------------------------------- running it

@dataclass
class Record:
    client: int
    kind: str
    start: float
    seconds: float | None = None
    error: str | None = None
    key: str = ""


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def cache_stats(client: GradioHTTP) -> dict[str, int] | None:
    """The app's result-cache counters from /cache_stats, None if the app has no such endpoint."""
    try:
        (stats,) = client.call("cache_stats")
    except (httpx.HTTPError, GradioCallError, ValueError):  # an app without the endpoint
        return None
    return stats if isinstance(stats, dict) and "hits" in stats else None


def wait_for_prefill(client, pid: int, n_examples: int, timeout: float, settle: float) -> dict[str, Any]:
    """Wait until the app's start-up gallery analyses are done: its result cache holds
    ``n_examples`` entries (by /cache_stats, where the app has it), or its processes have used
    under 10% of a core for 3 s; then ``settle`` more seconds."""
    started = time.perf_counter()
    how = "timeout"
    idle_since, last = None, (time.perf_counter(), sum(tree_cpu_seconds(pid).values()))
    while time.perf_counter() - started < timeout:
        time.sleep(0.5)
        stats = cache_stats(client)
        if stats is not None and stats.get("entries", 0) >= n_examples:
            how = "cache_stats entries"
            break
        now, cpu = time.perf_counter(), sum(tree_cpu_seconds(pid).values())
        busy = (cpu - last[1]) / max(1e-6, now - last[0])
        last = (now, cpu)
        idle_since = (idle_since or now) if busy < 0.1 else None
        if idle_since is not None and now - idle_since >= 3:
            how = "cpu idle"
            break
    time.sleep(settle)
    return {"how": how, "waited_s": round(time.perf_counter() - started, 1)}


def visit(index: int, client: GradioHTTP, plan: Sequence[Step], set_name: str, steps: int, lesson_image: Path,
          default_eps: int, run: Run, start_gate: threading.Event, deadline: float, think_s: float) -> None:
    rng = random.Random(f"think-{index}")
    start_gate.wait()
    for step in plan:
        if time.perf_counter() > deadline:
            return
        record = Record(index, step.kind, time.perf_counter(), key=request_key(step, steps, lesson_image, default_eps))
        stage = "predict"
        try:
            if step.kind == "lesson":
                out = client.call("lesson", step.title, set_name)
            else:
                out = client.call("explore", *explore_args(set_name, client.upload(step.image), step.eps_255,
                                                           step.seed, steps))
            stage = "fetch"  # the answer's image files, as a browser shows them
            client.fetch_files(out)
            record.seconds = time.perf_counter() - record.start
        except Exception as err:  # counted, not raised: the test reports errors
            record.error = f"{stage}: {type(err).__name__}: {err}"[:200]
        with run.lock:
            run.records.append(record)
        if think_s:
            time.sleep(rng.uniform(0, 2 * think_s))


def summarize_md(result: dict[str, Any]) -> str:
    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    head = ["clients", "requests", "errors", "p50 s", "p95 s", "max RSS MB", "requests/s"]
    row = [str(result["clients"]), str(result["requests"]), str(result["errors"]), f(result["p50_s"]),
           f(result["p95_s"]), f(result["max_rss_mb"], "{:.0f}"), f(result["throughput_rps"])]
    if result["scenario"] == "classroom":
        head.append("cache hit rate")
        row.append(f(result["cache_hit_rate"]) if result["cache_hit_rate"] is not None
                   else f"- (expected {f(result['expected_cache_hit_rate'])})")
    t = result["targets"]
    if result["scenario"] == "classroom":
        intro = (f"A lesson replayed by {result['clients']} concurrent sessions: the five Learn steps, three gallery "
                 f"images at the default settings (PGD-{result['steps']}, eps {result['default_eps_255']}/255, the "
                 f"robust network), and one session in {UPLOAD_EVERY} uploads its own image with its own eps. ")
    else:
        intro = (f"{result['clients']} concurrent sessions x {result['requests_per_client']} Explore requests "
                 f"(PGD-{result['steps']}, every defense, a new seed each: nothing from the cache). ")
    text = (intro + f"{result['hardware']}, {os.cpu_count()} cores. Targets: {t['errors']} errors, p95 <= {t['p95_s']} s, "
            f"RSS <= {t['max_rss_mb']:,} MB (the largest sum over the app's processes, sampled every "
            f"{SAMPLE_EVERY_S} s).\n\n" + markdown_table(head, [row]) + "\n")
    per = [[kind, str(s["n"]), f(s["p50_s"]), f(s["p95_s"]), f(s["max_s"])] for kind, s in result["endpoints"].items()]
    text += "\n" + markdown_table(["request", "n", "p50 s", "p95 s", "max s"], per) + "\n"
    procs = [[p["role"], f(p["peak_rss_mb"], "{:.0f}"), f(p["vmhwm_mb"], "{:.0f}")] for p in result["rss_processes"]]
    text += "\n" + markdown_table(["process", "peak RSS MB (during the run)", "VmHWM MB (since start)"], procs) + "\n"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["explore", "classroom"], default="explore")
    parser.add_argument("--clients", type=int, default=None, help="sessions (default: 20 explore, 30 classroom)")
    parser.add_argument("--requests", type=int, default=10, help="requests per session (explore scenario)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--think-s", type=float, default=0.0,
                        help="mean pause between a session's requests (uniform 0..2x; default 0: back to back)")
    parser.add_argument("--seed", type=int, default=0, help="classroom: seeds the gallery picks and the uploads")
    parser.add_argument("--settle-s", type=float, default=3.0, help="wait after the start-up prefill")
    parser.add_argument("--max-seconds", type=float, default=1200)
    parser.add_argument("--workers", type=int, default=None, help="app.py --workers (default: the app's)")
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/load.json (explore), load_classroom.json (classroom)")
    args = parser.parse_args(argv)
    classroom = args.scenario == "classroom"
    clients = args.clients or (30 if classroom else 20)
    out = Path(args.out or RESULTS / ("load_classroom.json" if classroom else "load.json"))
    folder = checkpoint_dir(args.checkpoints)
    set_name = folder.name
    default_eps = default_eps_255(read_card(folder / "adv.safetensors")["eps"])
    examples = gallery_examples()
    if not examples:
        raise SystemExit("no gallery images in assets/examples")
    lesson_image = lesson_example(examples)
    upload_dir = Path(tempfile.mkdtemp(prefix="cafe_load_uploads_"))
    plans = [classroom_plan(i, examples, default_eps, upload_dir, args.seed) if classroom
             else explore_plan(i, examples, default_eps, args.requests) for i in range(clients)]
    # The app's start-up prefill: every gallery image at the defaults (so the lesson example too).
    prefilled = {request_key(Step("gallery", image=p, eps_255=default_eps), DEFAULT_STEPS, lesson_image, default_eps)
                 for p in examples}

    port = free_port()
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1"]
    if args.checkpoints:
        command += ["--checkpoints", args.checkpoints]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    load_at_start = os.getloadavg()
    launched = time.perf_counter()
    stderr_file = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the app
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr_file,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    sampler = RssSampler(process.pid)
    run = Run()
    try:
        url = f"http://127.0.0.1:{port}/"
        startup = wait_until_up(url, process, 300)
        probe = GradioHTTP(url)
        prefill = wait_for_prefill(probe, process.pid, len(examples), 300, args.settle_s)
        stats_before = cache_stats(probe)
        rss_at_start = snapshot_rss(process.pid)
        sessions = [GradioHTTP(url) for _ in range(clients)]
        gate = threading.Event()
        deadline = time.perf_counter() + args.max_seconds
        threads = [threading.Thread(target=visit, daemon=True,
                                    args=(i, sessions[i], plans[i], set_name, args.steps, lesson_image,
                                          default_eps, run, gate, deadline, args.think_s)) for i in range(clients)]
        for t in threads:
            t.start()
        sampler.start()
        cpu_start, client_cpu_start = tree_cpu_seconds(process.pid), cpu_seconds(os.getpid())
        started = time.perf_counter()
        gate.set()
        for t in threads:
            t.join(max(0.0, deadline - time.perf_counter()) + 200)
        wall = time.perf_counter() - started
        cpu_end, client_cpu = tree_cpu_seconds(process.pid), cpu_seconds(os.getpid()) - client_cpu_start
        sampler.stop()
        rss_processes = sampler.processes()
        stats_after = cache_stats(probe)
    finally:
        if sampler.is_alive():
            sampler.stop()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        stderr_file.seek(0)
        stderr_tail = stderr_file.read().decode(errors="replace")[-2000:]
        stderr_file.close()
        shutil.rmtree(upload_dir, ignore_errors=True)
        if sys.exc_info()[0] is not None and stderr_tail:
            print(f"app.py's stderr (last 2,000 characters):\n{stderr_tail}", file=sys.stderr)
    records = sorted(run.records, key=lambda r: r.start)
    ok = [r.seconds for r in records if r.error is None]
    errors = [r.error for r in records if r.error is not None]
    planned = sum(len(p) for p in plans)
    app_cpu = sum(cpu_end.get(p, 0.0) - cpu_start.get(p, 0.0) for p in cpu_end)
    if stats_before is not None and stats_after is not None:
        hits, misses = stats_after["hits"] - stats_before["hits"], stats_after["misses"] - stats_before["misses"]
        hit_rate = hits / (hits + misses) if hits + misses else None
    else:
        hits = misses = hit_rate = None
    kinds = ("lesson", "gallery", "upload") if classroom else ("explore",)
    result = {
        "clients": clients, "requests": len(records), "errors": len(errors),
        "p50_s": statistics.median(ok) if ok else None, "p95_s": percentile(ok, 95) if ok else None,
        "max_rss_mb": round(sampler.max_sum_mb, 1), "cache_hit_rate": hit_rate,
        "expected_cache_hit_rate": expected_hit_rate([r.key for r in records], prefilled),
        "cache": {"source": "/cache_stats (hits and misses during the run)" if hit_rate is not None
                  else "unavailable: the app exposes no /cache_stats; see expected_cache_hit_rate",
                  "hits": hits, "misses": misses, "before": stats_before, "after": stats_after},
        "scenario": args.scenario, "max_s": max(ok) if ok else None,
        "endpoints": {k: {**latency_stats([r.seconds for r in records if r.kind == k and r.error is None]),
                          "errors": sum(1 for r in records if r.kind == k and r.error is not None)} for k in kinds},
        "throughput_rps": len(ok) / wall if wall else None, "wall_s": round(wall, 1),
        "planned_requests": planned, "stopped_by_deadline": len(records) < planned,
        "rss_max_sum_mb": round(sampler.max_sum_mb, 1), "rss_samples": sampler.samples,
        "rss_sample_every_s": SAMPLE_EVERY_S, "rss_processes": rss_processes, "rss_at_start": rss_at_start,
        "rss_sum_of_process_peaks_mb": round(sum(p["peak_rss_mb"] for p in rss_processes), 1),
        "app_cpu_s_per_request": round(app_cpu / max(1, len(ok)), 3),
        "server_cpu_s_per_request": round(app_cpu / max(1, len(ok)), 3),  # the name earlier results used
        "client_cpu_s_per_request": round(client_cpu / max(1, len(ok)), 3),
        "startup_s": round(startup, 1), "prefill_wait": prefill, "launch_to_run_s": round(started - launched, 1),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "errors_by_stage": {stage: sum(1 for e in errors if e.startswith(stage + ":")) for stage in ("predict", "fetch")},
        "error_samples": errors[:5],
        "requests_log": {"columns": ["client", "kind", "start_s", "seconds (null: error)"],
                         "rows": [[r.client, r.kind, round(r.start - started, 3),
                                   None if r.seconds is None else round(r.seconds, 3)] for r in records]}, "server_stderr_tail": stderr_tail if errors else "",
        "steps": args.steps, "default_eps_255": default_eps, "attack": f"pgd-{args.steps}", "network": "adv",
        "checkpoint_set": set_name, "think_s": args.think_s, "targets": TARGETS[args.scenario],
        "cpu_count": os.cpu_count(), **provenance(command_line("benchmarks/load_test.py", argv)),
        "client": "benchmarks/gradio_http.py (raw HTTP: upload, /gradio_api/call, SSE, one GET per picture)",
    }
    if classroom:
        result["plan"] = {"lesson_steps": list(LESSON_TITLES), "gallery_per_client": GALLERY_PER_CLIENT,
                          "upload_every": UPLOAD_EVERY, "uploaders": sum(1 for p in plans if p[-1].kind == "upload"),
                          "lesson_image": lesson_image.relative_to(ROOT).as_posix(), "seed": args.seed}
    else:
        result["requests_per_client"] = args.requests
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    text = summarize_md(result)
    atomic_write_text(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
