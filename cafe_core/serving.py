"""Explore analyses in worker processes, so concurrent visitors use every core.

Why processes: one Explore analysis is about a thousand small torch operators on a single
28x28 image, and their Python-side dispatch holds the GIL. Two analyses in two threads of one
process therefore run no faster than one after the other (measured on 2 cores: two concurrent
requests 1.50 s, one request 0.80 s), and under a classroom's load the app served ~1 request/s
with one core idle. Each worker process loads the checkpoint sets itself and answers with the
same plain data as :meth:`cafe_core.lab.Lab.comparison`. Workers are spawned, not forked:
forking a process whose torch thread pools have started is unsafe. The standard library's
``ProcessPoolExecutor`` does the process management.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from .explore import ExploreResult

_LABS: dict[str, Any] = {}  # per worker process: folder -> Lab


class WorkerStopped(RuntimeError):
    """A worker process died (e.g. killed for memory); the pool has been restarted."""


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _lab(folder: str):
    from .lab import Lab

    if folder not in _LABS:
        _LABS[folder] = Lab(folder)
    return _LABS[folder]


def _comparison(folder: str, image: torch.Tensor, true_label: int | None, bundle_path: str | None,
                settings: dict[str, Any]) -> tuple[ExploreResult, list[dict[str, Any]]]:
    from .analysis import load_amr

    bundle = load_amr(bundle_path) if bundle_path else None
    return _lab(folder).comparison(image, true_label, bundle=bundle, **settings)


def _warm_up(folder: str, image: torch.Tensor) -> bool:
    """Load the set and run one tiny analysis (torch's one-off initialisation, ~1.5 s)."""
    lab = _lab(folder)
    if lab.bundle is not None:
        lab.comparison(image, None, steps=2, feature_steps=2)
    return True


class AnalysisPool:
    """``workers`` spawned processes answering :meth:`comparison`; ``workers=0`` runs in-process.

    Args:
        workers: worker processes (one per core is the useful maximum).
        threads: torch threads inside each worker.
    """

    def __init__(self, workers: int = 2, threads: int = 1) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers, self.threads = workers, threads
        self._executor: ProcessPoolExecutor | None = None
        self._start()

    def _start(self) -> None:
        if self.workers:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(self.threads,))

    def warm_up(self, folder: str | Path, image: torch.Tensor) -> None:
        """Start every worker and load ``folder`` in it, without waiting."""
        if self._executor is not None:
            for _ in range(self.workers):
                self._executor.submit(_warm_up, str(folder), image)

    def comparison(self, folder: str | Path, image: torch.Tensor, true_label: int | None,
                   bundle_path: str | Path | None = None, **settings: Any) -> tuple[ExploreResult, list[dict[str, Any]]]:
        """:meth:`Lab.comparison` of the set in ``folder`` (errors are re-raised as they are)."""
        args = (str(folder), image, true_label, str(bundle_path) if bundle_path else None, settings)
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
