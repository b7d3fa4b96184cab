"""A short AMR-GMM training run for the app's Train tab: bounded, cancellable, reported per epoch.

Trains new h and g on the loaded ADV backbone with the recipe's AMR-GMM settings, on a small
number of training images, into a private folder; the app then offers them to Explore.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..io.config import load_config

MAX_IMAGES = 2000
MAX_EPOCHS = 5
VAL_IMAGES = 200


@dataclass
class LiveRun:
    """A training thread and the epoch records it has produced so far."""

    out: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    done: bool = False
    stop: threading.Event = field(default_factory=threading.Event)


def check_budget(images: Any, epochs: Any) -> tuple[int, int]:
    """Validated (images, epochs) within the server-side caps, else ValueError."""
    try:
        n, e = int(images), int(epochs)
    except (TypeError, ValueError):
        raise ValueError("images and epochs must be whole numbers") from None
    if not 100 <= n <= MAX_IMAGES:
        raise ValueError(f"images must be between 100 and {MAX_IMAGES}, got {n}")
    if not 1 <= e <= MAX_EPOCHS:
        raise ValueError(f"epochs must be between 1 and {MAX_EPOCHS}, got {e}")
    return n, e


def train_amr_live(adv_checkpoint: str | Path, config_name: str, images: int, epochs: int, out_dir: str | Path,
                   seed: int = 0, poll_seconds: float = 1.0) -> Iterator[LiveRun]:
    """Start AMR-GMM training in a thread and yield the run each time an epoch ends (and once at
    the end). Closing the generator (the app's cancel) stops training between batches."""
    from .stages import run_stage

    images, epochs = check_budget(images, epochs)
    config = load_config(config_name, [f"stages.amr.epochs={epochs}", f"stages.amr.val_images={VAL_IMAGES}",
                                       f"seed={seed}"])
    run = LiveRun(Path(out_dir) / "amr.safetensors")
    events: queue.Queue = queue.Queue()

    def on_epoch(entry: dict[str, Any]) -> None:
        run.records.append(dict(entry))
        events.put("epoch")

    def work() -> None:
        try:
            run_stage(config, "amr", parent=adv_checkpoint, out=run.out, limit=images, progress=False,
                      command=f"app Train tab: {images} images, {epochs} epochs, seed {seed}",
                      on_epoch=on_epoch, should_stop=run.stop.is_set)
        except Exception as err:  # reported to the visitor; the thread must not die silently
            run.error = f"{type(err).__name__}: {err}"
        finally:
            run.done = True
            events.put("done")

    thread = threading.Thread(target=work, name="amr-live", daemon=True)
    thread.start()
    try:
        while True:
            try:
                event = events.get(timeout=poll_seconds)
            except queue.Empty:
                continue
            yield run
            if event == "done":
                return
    finally:
        run.stop.set()  # cancelled or finished: make sure the thread ends
