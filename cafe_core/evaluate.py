"""Accuracy under attack, as plain numbers, with resumable per-batch state for long runs."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from .attacks import build_attack
from .data import ImageTensors, make_loader
from .serialization import atomic_write_text


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted labels of a batch (model put in eval mode and restored)."""
    was_training = model.training
    model.eval()
    try:
        return model(images).argmax(dim=1)
    finally:
        model.train(was_training)


def correct_under_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         attack: Callable | None) -> torch.Tensor:
    """Boolean (N,) mask of images still classified correctly after ``attack`` (None = clean)."""
    adv = images if attack is None else attack(images, labels)
    return predict(model, adv) == labels


def accuracy(model: nn.Module, dataset: ImageTensors, attack: Callable | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu", limit: int | None = None,
             progress: bool = False) -> float:
    """Accuracy in [0,1] on the first ``limit`` images of ``dataset`` under ``attack``."""
    if limit is not None:
        dataset = dataset.subset(torch.arange(min(limit, len(dataset))))
    hits, seen = 0, 0
    for images, labels in tqdm(make_loader(dataset, batch_size, shuffle=False), disable=not progress,
                               leave=False, desc="eval"):
        images, labels = images.to(device), labels.to(device)
        hits += int(correct_under_attack(model, images, labels, attack).sum())
        seen += len(labels)
    return hits / max(seen, 1)


def validation_metrics(model: nn.Module, dataset: ImageTensors, cfg: dict[str, Any], device: torch.device,
                       robust: bool = True) -> dict[str, float]:
    """Per-epoch validation of a classifier stage: clean accuracy on ``dataset`` and, if
    ``robust``, accuracy under ``cfg['val_attack']`` (PGD-``val_steps`` at ``eps``, seeded) on its
    first ``val_adv_images`` images."""
    model.eval()
    metrics = {"clean_acc": accuracy(model, dataset, device=device)}
    if robust:
        attack = build_attack(cfg.get("val_attack", "pgd"), model, cfg["eps"], cfg.get("val_steps", 10),
                              num_classes=getattr(model, "num_classes", 10))
        torch.manual_seed(cfg.get("seed", 0))
        metrics["robust_acc"] = accuracy(model, dataset, attack, device=device, limit=cfg.get("val_adv_images", 1000))
    return metrics


def evaluate_attacks(model: nn.Module, dataset: ImageTensors, attacks: Sequence[str], eps: float,
                     seed: int = 0, batch_size: int = 256, device: str | torch.device = "cpu",
                     limits: dict[str, int] | None = None, state_path: str | Path | None = None,
                     steps: dict[str, int] | None = None, progress: bool = True,
                     read_only: bool = False, on_batch: Callable[[int, int], None] | None = None
                     ) -> dict[str, Any]:
    """Robust accuracy of ``model`` for each attack name ('clean' = no attack).

    Each batch's result is recorded in ``state_path`` (JSON, written atomically) as soon as it
    is known, so an interrupted evaluation (hours of AutoAttack on CPU) resumes where it stopped.
    The state is keyed by attack, eps, seed, steps and batch index; change any and it recomputes.
    With ``read_only`` nothing is computed: each attack reports the leading batches already in
    the state (attacks with none are left out). ``on_batch(done, total)`` is called after each
    batch (the app's progress bar).

    Returns:
        ``{"accuracy": {attack: acc}, "n_images": {attack: n}, "correct": {attack: [0/1 per image]},
        "seconds": {attack: s}}``.
    """
    state: dict[str, Any] = {}
    if state_path is not None and Path(state_path).is_file():
        state = json.loads(Path(state_path).read_text())
    model.eval()
    out: dict[str, Any] = {"accuracy": {}, "n_images": {}, "correct": {}, "seconds": {}}
    for name in attacks:
        n = min((limits or {}).get(name, len(dataset)), len(dataset))
        subset = dataset.subset(torch.arange(n))
        n_steps = (steps or {}).get(name)
        key = json.dumps([name, eps, seed, n_steps, batch_size])
        done: dict[str, Any] = state.setdefault(key, {"batches": {}, "seconds": 0.0})
        attack = None if name == "clean" else build_attack(name, model, eps, n_steps, seed, model.num_classes)
        correct: list[int] = []
        loader = make_loader(subset, batch_size, shuffle=False)
        for index, (images, labels) in enumerate(tqdm(loader, disable=not progress, desc=name, leave=False)):
            # A stored batch is reused only if it covers the same images (a different --limit
            # changes the length of the last batch).
            if len(done["batches"].get(str(index), ())) != len(labels):
                if read_only:
                    break
                start = time.perf_counter()
                # Seed per batch so a resumed run draws the same random starts as an unbroken one.
                torch.manual_seed(seed * 100_003 + index)
                mask = correct_under_attack(model, images.to(device), labels.to(device), attack)
                done["batches"][str(index)] = mask.int().tolist()
                done["seconds"] += time.perf_counter() - start
                if state_path is not None:
                    atomic_write_text(state_path, json.dumps(state))
            correct += done["batches"][str(index)]
            if on_batch is not None:
                on_batch(len(correct), n)
        if read_only and not correct:
            continue
        out["accuracy"][name] = sum(correct) / max(len(correct), 1)
        out["n_images"][name] = len(correct)
        out["correct"][name] = correct
        out["seconds"][name] = round(done["seconds"], 2)
    return out
