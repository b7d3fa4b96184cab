"""One trainer for every stage: epochs, seeds, AMP, validation, best-on-validation, resume.

A *stage* (``standard``, ``adv``, ``amr``, ``defense``) owns its modules, optimizers,
schedulers and per-batch update; the trainer owns everything around it:

* deterministic seeds per epoch (shuffling and attack random starts), so a run resumed after
  an interruption ends exactly where an unbroken run ends;
* per-epoch validation and keeping the best epoch by the stage's ``selection_metric``;
* a resume file (``<name>.resume.safetensors``) written atomically after each epoch, holding
  the modules, optimizers, schedulers, best weights and history (no pickle);
* the final checkpoint (weights + card) written once, atomically, when the run completes.

Under torchrun (``distributed.py``) each rank trains on its share of every batch: ``batch_size``
stays the *global* batch (each rank takes ``batch_size / world_size`` images), a
DistributedSampler draws the same per-epoch permutation as a single process, losses and
validation counts are summed over ranks, and only rank 0 writes the resume file and checkpoint.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .. import distributed
from ..data.datasets import ImageTensors, make_loader
from ..io.checkpoints import save_checkpoint
from ..io.config import digest
from ..io.provenance import hardware
from ..io.serialization import load_state, save_state


class Stage(Protocol):
    """What a training stage provides to the trainer."""

    name: str
    modules: dict[str, nn.Module]            # saved in the checkpoint
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]                # stepped once per batch
    selection_metric: str                     # validation key to maximise

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]: ...

    def validate(self, dataset: ImageTensors) -> dict[str, float]: ...


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when present (or as asked), else ``cpu``."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler); fp32 on CPU."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled and device.type == "cuda"
        bf16 = self.enabled and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and not bf16)

    def autocast(self):
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, (scaled) backward, optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


@dataclass(frozen=True)
class Runtime:
    """How a stage uses its hardware; none of it changes the method's maths.

    Attributes:
        amp: mixed precision on CUDA (``Precision``); CPU always runs fp32.
        channels_last: NHWC memory layout for networks and input batches (CUDA only).
        compile: ``torch.compile`` the trained backbone (its training forward and attacks).
        workers: DataLoader worker processes; with workers, pinned memory and persistent workers.
        sync_bn: BatchNorm of the trained backbone over all ranks' images (h and g always are).
    """

    amp: bool = True
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    sync_bn: bool = False

    def place(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` on ``device`` (NHWC on CUDA when ``channels_last``)."""
        module = module.to(device)
        if self.channels_last and device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        return module

    def compiled(self, module: nn.Module) -> nn.Module:
        """``torch.compile(module)`` when ``compile`` is set, else ``module``."""
        return torch.compile(module) if self.compile else module


def trainable(module: nn.Module, device: torch.device, runtime: Runtime, sync_bn: bool
              ) -> tuple[nn.Module, nn.Module]:
    """(net for attacks and inversion, net for the training forward) around a trained module.

    The first is the module itself (compiled with ``runtime.compile``); the second wraps it in
    DistributedDataParallel under torchrun. ``sync_bn`` converts its BatchNorm layers in place
    (parameters kept, so build optimizers before or after, either works).
    """
    if sync_bn:
        distributed.sync_batchnorm(module)
    net = runtime.compiled(module)
    return net, distributed.wrap(net, device)


def one_cycle(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Triangular schedule factor: 0 -> 1 over ``warmup`` of the steps, then 1 -> 0 (per batch)."""
    up = max(1, round(total_steps * warmup))
    down = max(1, total_steps - up)

    def factor(step: int) -> float:
        if step < up:
            return step / up
        return max(0.0, 1 - (step - up) / down)

    return factor


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class FitResult:
    card: dict[str, Any]
    history: list[dict[str, float]]
    resumed_from_epoch: int


SEEN = "__seen__"  # images counted this epoch, reduced with the loss sums


def resume_path(weights: Path) -> Path:
    return weights.with_suffix(".resume.safetensors")


def _snapshot(modules: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


def training_loader(train_set: ImageTensors, batch_size: int, seed: int, device: torch.device,
                    workers: int = 0) -> tuple[DataLoader, DistributedSampler]:
    """This rank's shuffled batches and their sampler (call ``sampler.set_epoch`` every epoch).

    Epoch ``e`` is the permutation of ``torch.Generator().manual_seed(seed * 1000 + e)``, the
    same as a single process's RandomSampler; rank r takes every world_size-th image from r, so
    the ranks' step-k batches together are the single process's step-k batch.
    """
    rank = distributed.world()
    if batch_size % rank.size:
        raise ValueError(f"batch size {batch_size} is not divisible by the {rank.size} ranks")
    sampler = DistributedSampler(train_set, num_replicas=rank.size, rank=rank.rank, shuffle=True,
                                 seed=seed * 1000, drop_last=True)
    loader = make_loader(train_set, batch_size // rank.size, shuffle=True, drop_last=True, sampler=sampler,
                         workers=workers, pin_memory=device.type == "cuda")
    return loader, sampler


def fit(stage: Stage, train_set: ImageTensors, val_set: ImageTensors, *, epochs: int, batch_size: int,
        seed: int, out: str | Path, card: dict[str, Any], device: torch.device,
        storage_dtype: torch.dtype | None = None, progress: bool = True,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        should_stop: Callable[[], bool] | None = None, channels_last: bool = False,
        workers: int = 0) -> FitResult:
    """Train ``stage`` for ``epochs`` and write the best-on-validation checkpoint to ``out``.

    Args:
        batch_size: the global batch; under torchrun each rank takes ``batch_size / world_size``.
        card: descriptive fields for the checkpoint card; must contain ``config``.
        on_epoch: called with each epoch's log (the app plots it live; rank 0 only).
        should_stop: polled between batches; returning True stops early without writing the
            final checkpoint (the resume file keeps the last finished epoch). Single process only.
        channels_last: hand batches to the stage in NHWC layout (CUDA only).
        workers: DataLoader worker processes.
    """
    rank = distributed.world()
    if should_stop is not None and rank.size > 1:
        raise ValueError("should_stop is for single-process runs (a stop on one rank would hang the others)")
    progress = progress and rank.is_main
    say = tqdm.write if rank.is_main else (lambda _text: None)
    nhwc = channels_last and device.type == "cuda"
    out = Path(out)
    resume = resume_path(out)
    config_id = digest(card["config"])
    start_epoch, history, best, best_state, elapsed = 0, [], -math.inf, None, 0.0
    if resume.is_file():
        state = load_state(resume)
        if state["config_digest"] == config_id:
            for name, module in stage.modules.items():
                module.load_state_dict(state["modules"][name])
            for name, opt in stage.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            for name, sched in stage.schedulers.items():
                sched.load_state_dict(state["schedulers"][name])
            start_epoch, history = state["epoch"], list(state["history"])
            best, best_state, elapsed = state["best"], state["best_modules"], state["elapsed"]
            say(f"[{stage.name}] resuming after epoch {start_epoch} from {resume.name}")
        else:
            say(f"[{stage.name}] {resume.name} belongs to another config; starting afresh")
    loader, sampler = training_loader(train_set, batch_size, seed, device, workers)
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        # Rank 0 keeps the single-process seed; other ranks get their own stream (random starts).
        seed_everything(seed * 1000 + epoch + (rank.rank << 32))
        sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        seen = 0
        bar = tqdm(loader, desc=f"{stage.name} {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for images, labels in bar:
            if should_stop is not None and should_stop():
                bar.close()
                return FitResult(card={}, history=history, resumed_from_epoch=start_epoch)
            images = images.to(device, non_blocking=True)
            if nhwc:
                images = images.contiguous(memory_format=torch.channels_last)
            logs = stage.train_batch(images, labels.to(device, non_blocking=True))
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value * len(labels)
            seen += len(labels)
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()})
        totals = distributed.reduce_sums({**sums, SEEN: seen})
        seen = int(totals.pop(SEEN))
        sums = totals
        distributed.broadcast_buffers(stage.modules.values())  # rank 0's BatchNorm statistics everywhere
        metrics = stage.validate(val_set)
        entry = {"epoch": epoch + 1, **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
                 **{f"val_{k}": v for k, v in metrics.items()},
                 "lr": next(iter(stage.optimizers.values())).param_groups[0]["lr"],
                 "seconds": round(time.perf_counter() - began, 2)}
        history.append(entry)
        elapsed += entry["seconds"]
        score = metrics[stage.selection_metric]
        if score > best:
            best, best_state = score, _snapshot(stage.modules)
        say(f"[{stage.name}] epoch {epoch + 1}/{epochs} " +
            " ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float)))
        if rank.is_main:
            save_state(resume, {
                "config_digest": config_id, "epoch": epoch + 1, "history": history, "best": best,
                "best_modules": best_state, "elapsed": elapsed,
                "modules": {n: m.state_dict() for n, m in stage.modules.items()},
                "optimizers": {n: o.state_dict() for n, o in stage.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in stage.schedulers.items()},
            })
            if on_epoch is not None:
                on_epoch(entry)
        distributed.barrier()
    for name, module in stage.modules.items():
        module.load_state_dict(best_state[name])
    selected = max(history, key=lambda e: e[f"val_{stage.selection_metric}"])
    full_card = dict(card, stage=card.get("stage", stage.name), seed=seed, metrics=selected,
                     history=history, epoch_selected=selected["epoch"],
                     selection_metric=f"val_{stage.selection_metric}", config_digest=config_id,
                     train_seconds=round(elapsed, 1), hardware=hardware(), complete=True)
    written = None
    if rank.is_main:
        written = save_checkpoint(out, stage.modules, full_card, dtype=storage_dtype)
        resume.unlink(missing_ok=True)
    distributed.barrier()
    return FitResult(card=distributed.broadcast_object(written), history=history, resumed_from_epoch=start_epoch)
