"""Explore analyses in worker processes, so concurrent visitors use every core.

Why processes: one Explore analysis is about a thousand small torch operators on a single
28x28 image, and their Python-side dispatch holds the GIL. Two analyses in two threads of one
process therefore run no faster than one after the other (measured on 2 cores: two concurrent
requests 1.50 s, one request 0.80 s), and under a classroom's load the app served ~1 request/s
with one core idle. Each worker process loads the checkpoint sets itself and answers with the
same plain data as :meth:`cafe_core.serving.lab.Lab.comparison`. Workers are spawned, not forked:
forking a process whose torch thread pools have started is unsafe. The standard library's
``ProcessPoolExecutor`` does the process management.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from ..io.serialization import sha256_file
from .explore import ExploreResult

_LABS: dict[str, Any] = {}  # per worker process: folder -> Lab


class WorkerStopped(RuntimeError):
    """A worker process died (e.g. killed for memory); the pool has been restarted."""


def _init_worker(threads: int, parent: int | None = None) -> None:
    torch.set_num_threads(threads)
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this worker once the app that started it is gone.

    A worker blocks on its task queue, and spawned workers hold both ends of that queue's pipe, so a
    parent killed without closing the pool (SIGTERM, SIGKILL, a crashed server) never sends them an
    end of file: they would live on, ~0.9 GB each, until the machine restarts. The parent's pid is
    polled because Linux gives an orphan a new parent (``os.getppid()`` changes)."""
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(0)


def _lab(folder: str):
    from .lab import Lab

    if folder not in _LABS:
        _LABS[folder] = Lab(folder)
    return _LABS[folder]


def _comparison(folder: str, image: torch.Tensor, true_label: int | None, bundle_path: str | None,
                settings: dict[str, Any]) -> tuple[ExploreResult, list[dict[str, Any]]]:
    from ..causal.analysis import load_amr

    bundle = load_amr(bundle_path) if bundle_path else None
    return _lab(folder).comparison(image, true_label, bundle=bundle, **settings)


def _warm_up(folder: str, image: torch.Tensor) -> bool:
    """Load the set and run one tiny analysis (torch's one-off initialisation, ~1.5 s)."""
    lab = _lab(folder)
    if lab.bundle is not None:
        lab.comparison(image, None, steps=2, feature_steps=2)
    return True


def checkpoint_fingerprint(folder: str | Path) -> str:
    """sha256 over the sha256 recorded in every card of a checkpoint set (a changed file, a changed key)."""
    digest = hashlib.sha256()
    for card in sorted(Path(folder).glob("*.json")):
        try:
            sha = json.loads(card.read_text()).get("sha256", "")
        except (OSError, ValueError, AttributeError):
            sha = ""
        digest.update(f"{card.name}:{sha};".encode())
    return digest.hexdigest()


def _spawn_without_main_script() -> None:
    """Make spawned workers import this module instead of re-running the parent's main script.

    A spawned child re-executes the parent's ``__main__`` file; for ``python app.py`` that means
    gradio, the page layout and every import of the app, none of which an analysis uses
    (benchmarks/worker_memory.py measures a worker's memory both ways).
    When the parent runs a script (``__spec__`` is None), naming a module spec makes the child
    import that module by name instead (multiprocessing.spawn's documented ``-m`` behaviour).
    """
    import importlib.machinery
    import sys

    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None and getattr(main, "__file__", None):
        main.__spec__ = importlib.machinery.ModuleSpec(__name__, None)


class ResultCache:
    """Finished analyses by content: sha256 of the model input, the settings and the checkpoints.

    A class of 30 sends the same gallery image with the same settings at once; each answer after
    the first is a dictionary lookup. Bounded: the least recently used entry goes first. The
    results are shared, so callers treat them as read-only.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(image: torch.Tensor, settings: dict[str, Any], fingerprint: str) -> str:
        digest = hashlib.sha256(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        digest.update(fingerprint.encode())
        return digest.hexdigest()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class AnalysisPool:
    """``workers`` spawned processes answering :meth:`comparison`; ``workers=0`` runs in-process.

    Answers are kept in a :class:`ResultCache` shared by every worker (it lives in this process).

    Args:
        workers: worker processes (one per core is the useful maximum).
        threads: torch threads inside each worker.
        cache_entries: finished analyses kept (0: no cache).
    """

    def __init__(self, workers: int = 2, threads: int = 1, cache_entries: int = 256) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers, self.threads = workers, threads
        self.cache = ResultCache(cache_entries) if cache_entries else None
        self._fingerprints: dict[str, str] = {}
        self._executor: ProcessPoolExecutor | None = None
        self._start()

    def _start(self) -> None:
        if self.workers:
            _spawn_without_main_script()
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(self.threads, os.getpid()))

    def warm_up(self, folder: str | Path, image: torch.Tensor) -> None:
        """Start every worker and load ``folder`` in it, without waiting."""
        if self._executor is not None:
            for _ in range(self.workers):
                self._executor.submit(_warm_up, str(folder), image)

    def comparison(self, folder: str | Path, image: torch.Tensor, true_label: int | None,
                   bundle_path: str | Path | None = None, **settings: Any) -> tuple[ExploreResult, list[dict[str, Any]]]:
        """:meth:`Lab.comparison` of the set in ``folder`` (errors are re-raised as they are),
        from the cache when the same input, settings and checkpoints were analysed before."""
        args = (str(folder), image, true_label, str(bundle_path) if bundle_path else None, settings)
        key = None
        if self.cache is not None:
            fingerprint = self._fingerprint(str(folder), checkpoint_fingerprint)
            if bundle_path:  # a trained h/g file is written once, so its hash is computed once
                fingerprint += self._fingerprint(str(bundle_path), sha256_file)
            key = ResultCache.key(image, {**settings, "true_label": true_label}, fingerprint)
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        answer = self._compute(args)
        if key is not None:
            self.cache.put(key, answer)
        return answer

    def _fingerprint(self, path: str, digest) -> str:
        if path not in self._fingerprints:
            self._fingerprints[path] = digest(path)
        return self._fingerprints[path]

    def _compute(self, args: tuple) -> tuple[ExploreResult, list[dict[str, Any]]]:
        if self._executor is None:
            return _comparison(*args)
        try:
            return self._executor.submit(_comparison, *args).result()
        except BrokenProcessPool:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._start()
            raise WorkerStopped("the analysis worker stopped (out of memory?); it has been restarted, "
                                "please try again") from None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
