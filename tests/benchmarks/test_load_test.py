"""benchmarks/load_test.py without a server: the /explore inputs it sends, the classroom plan,
its uploads, the expected cache hit rate and the process-tree memory sampler."""
from __future__ import annotations

import hashlib
import inspect
import os
import subprocess
import sys
import time

import pytest

from benchmarks import load_test as lt
from cafe_core.serving.handlers import run_explore
from cafe_core.data.images import prepare_image
from cafe_core.serving.lesson import LESSON_TITLES
from cafe_core.serving.settings import DEFAULT_SEED, DEFAULT_STEPS


def test_explore_inputs_are_run_explores_parameters():
    # app.py passes /explore's inputs straight to run_explore(ctx, *inputs) with ``trained`` a gr.State,
    # which the API leaves out; the benchmark must send the others in that order.
    params = list(inspect.signature(run_explore).parameters)
    assert params[0] == "ctx" and "trained" in params
    assert tuple(p for p in params[1:] if p != "trained") == lt.EXPLORE_INPUTS
    args = lt.explore_args("fashion_lite", "img.png", 26, 7)
    assert len(args) == len(lt.EXPLORE_INPUTS)
    named = dict(zip(lt.EXPLORE_INPUTS, args))
    assert named["network"] == "adv" and named["eps_255"] == 26 and named["seed"] == 7
    assert named["steps"] == DEFAULT_STEPS and named["target"] == "none" and named["use_trained"] is False
    assert named["auto_negate"] is True


def test_gallery_in_manifest_order_and_lesson_example_is_in_it():
    examples = lt.gallery_examples()
    if not examples:
        pytest.skip("no gallery (assets/examples)")
    assert all(p.is_file() for p in examples)
    assert lt.lesson_example(examples) in examples


def test_classroom_plan(tmp_path):
    examples = lt.gallery_examples()
    if len(examples) < lt.GALLERY_PER_CLIENT:
        pytest.skip("no gallery (assets/examples)")
    default = 26
    plans = [lt.classroom_plan(i, examples, default, tmp_path / "a") for i in range(10)]
    for i, plan in enumerate(plans):
        assert [s.title for s in plan[:5]] == list(LESSON_TITLES) and all(s.kind == "lesson" for s in plan[:5])
        gallery = [s for s in plan if s.kind == "gallery"]
        assert len(gallery) == lt.GALLERY_PER_CLIENT == len({s.image for s in gallery})
        assert all(s.eps_255 == default and s.seed == DEFAULT_SEED and s.image in examples for s in gallery)
        uploads = [s for s in plan if s.kind == "upload"]
        assert len(uploads) == (1 if i % lt.UPLOAD_EVERY == 0 else 0)
        for s in uploads:
            assert s.eps_255 != default and 0 < s.eps_255 <= 64
    assert sum(p[-1].kind == "upload" for p in plans) == 2  # sessions 0 and 5 of 10
    # Seeded: the same plan (and the same upload bytes) again.
    again = lt.classroom_plan(5, examples, default, tmp_path / "b")
    assert [(s.kind, s.title, s.image.name if s.image else None, s.eps_255) for s in again] == \
        [(s.kind, s.title, s.image.name if s.image else None, s.eps_255) for s in plans[5]]
    assert again[-1].image.read_bytes() == plans[5][-1].image.read_bytes()


def test_uploads_are_new_content_that_the_app_can_read(tmp_path):
    import random

    examples = lt.gallery_examples()
    if not examples:
        pytest.skip("no gallery (assets/examples)")
    gallery_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in examples}
    inputs = {prepare_image(p, 1, 28).tensor.numpy().tobytes() for p in examples}
    for k in range(4):
        path = lt.make_upload(examples[k], random.Random(k), tmp_path, f"u{k}")
        assert hashlib.sha256(path.read_bytes()).hexdigest() not in gallery_hashes
        prepared = prepare_image(path, 1, 28)
        assert tuple(prepared.tensor.shape) == (1, 1, 28, 28)
        assert prepared.tensor.numpy().tobytes() not in inputs  # a new model input: a cache miss


def test_request_keys_and_expected_hit_rate(tmp_path):
    examples = lt.gallery_examples()
    if len(examples) < 2:
        pytest.skip("no gallery (assets/examples)")
    lesson = lt.lesson_example(examples)
    key = lambda step: lt.request_key(step, DEFAULT_STEPS, lesson, 26)  # noqa: E731
    prefilled = {key(lt.Step("gallery", image=p, eps_255=26)) for p in examples}
    # A lesson step analyses the lesson example at the defaults: the prefill has it.
    assert key(lt.Step("lesson", title=LESSON_TITLES[0])) in prefilled
    assert key(lt.Step("gallery", image=examples[0], eps_255=25)) not in prefilled
    # The uncached scenario never repeats a key, and never the prefill's.
    explore = [key(s) for i in range(3) for s in lt.explore_plan(i, examples, 26, 4)]
    assert lt.expected_hit_rate(explore, prefilled) == 0.0
    a, b = key(lt.Step("gallery", image=examples[0], eps_255=20)), key(lt.Step("gallery", image=examples[1], eps_255=20))
    assert lt.expected_hit_rate([a, b, a, a], set()) == 0.5
    assert lt.expected_hit_rate([], set()) is None


def test_latency_stats():
    assert lt.latency_stats([]) == {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    stats = lt.latency_stats([1.0, 2.0, 3.0])
    assert stats["n"] == 3 and stats["p50_s"] == 2.0 and stats["max_s"] == 3.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_rss_sampler_sums_the_process_tree():
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 * 2**20); time.sleep(30)"])
    try:
        deadline = time.time() + 20
        while (lt.status_mb(child.pid, "VmRSS") or 0) < 60 and time.time() < deadline:
            time.sleep(0.1)
        assert child.pid in lt.process_tree(os.getpid())
        sampler = lt.RssSampler(os.getpid(), every=0.05)
        sampler.start()
        time.sleep(0.3)
        sampler.stop()
        own = lt.status_mb(os.getpid(), "VmRSS")
        assert sampler.samples >= 2 and sampler.max_sum_mb >= own + 60
        by_pid = {p["pid"]: p for p in sampler.processes()}
        assert by_pid[os.getpid()]["role"] == "server" and by_pid[child.pid]["peak_rss_mb"] >= 60
        assert by_pid[child.pid]["vmhwm_mb"] >= by_pid[child.pid]["peak_rss_mb"]
        assert {p["pid"] for p in lt.snapshot_rss(os.getpid())} >= {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()
    assert lt.status_mb(child.pid, "VmRSS") is None


def test_cache_stats_reads_an_annotated_endpoint_and_tolerates_none():
    # The app's /cache_stats must declare its output (a return annotation): gr.api(lambda: ...) has
    # no output component and answers (), which the benchmark reads as "no stats".
    gr = pytest.importorskip("gradio")
    from benchmarks.gradio_http import GradioHTTP

    def stats() -> dict:
        return {"hits": 3, "misses": 1, "entries": 1}

    with gr.Blocks() as demo:
        gr.Markdown("load test")
        gr.api(stats, api_name="cache_stats", queue=False)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None)
    try:
        with GradioHTTP(url) as client:
            assert lt.cache_stats(client) == {"hits": 3, "misses": 1, "entries": 1}
    finally:
        demo.close()
    with gr.Blocks() as bare:
        gr.Markdown("no stats")
    _, url, _ = bare.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None)
    try:
        with GradioHTTP(url) as client:
            assert lt.cache_stats(client) is None
    finally:
        bare.close()
