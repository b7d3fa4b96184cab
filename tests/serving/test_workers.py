"""The worker pool behind Explore: workers end with the app, however the app ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cafe_core.serving.workers import AnalysisPool, ResultCache

# An app stand-in: a pool with one worker, the worker's pid on stdout, then waiting to be killed.
APP = """
import os, sys, time
from cafe_core.serving.workers import AnalysisPool
pool = AnalysisPool(workers=1)
print(pool._executor.submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too (nothing left but its exit status)
        return stat.read().split()[2] != "Z"


def test_workers_end_when_the_app_is_killed_or_terminated():
    # Two app stand-ins at once (their start-up is most of the cost): one gets SIGKILL, one SIGTERM.
    apps = {how: subprocess.Popen([sys.executable, "-c", APP], stdout=subprocess.PIPE, text=True)
            for how in (signal.SIGKILL, signal.SIGTERM)}
    try:
        workers = {how: int(app.stdout.readline()) for how, app in apps.items()}
        for how, app in apps.items():
            assert workers[how] != app.pid and alive(workers[how])
            os.kill(app.pid, how)
            app.wait(timeout=30)
        deadline = time.time() + 15
        while any(alive(pid) for pid in workers.values()) and time.time() < deadline:
            time.sleep(0.2)
        left = [signal.Signals(how).name for how, pid in workers.items() if alive(pid)]
        assert left == [], f"orphaned workers (keeping their memory until the machine restarts) after {left}"
    finally:
        for app in apps.values():
            app.kill()


def test_cache_keeps_the_most_recently_used_entries():
    cache = ResultCache(max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2


def test_a_pool_without_workers_runs_in_process_and_rejects_a_negative_count():
    assert AnalysisPool(workers=0)._executor is None
    with pytest.raises(ValueError, match="workers must be >= 0"):
        AnalysisPool(workers=-1)
