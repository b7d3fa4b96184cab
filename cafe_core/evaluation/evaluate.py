"""Accuracy under attack, as plain numbers, with resumable per-batch state for long runs.

Under torchrun, validation splits its images across ranks and sums the counts (robust accuracy
then differs from one process's only through the attack's random starts), and
``evaluate_attacks`` deals whole batches round-robin to the ranks, each with its own seed, so its
numbers are exactly those of a single process.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..attacks.registry import build_attack
from ..data.datasets import ImageTensors, make_loader
from ..io.provenance import cpu_name, hardware
from ..io.serialization import atomic_write_text


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


def count_correct(model: nn.Module, dataset: ImageTensors, attack: Callable | None = None,
                  batch_size: int = 256, device: str | torch.device = "cpu", progress: bool = False
                  ) -> tuple[int, int]:
    """(images still classified correctly under ``attack``, images seen) over all of ``dataset``."""
    hits, seen = 0, 0
    for images, labels in tqdm(make_loader(dataset, batch_size, shuffle=False), disable=not progress,
                               leave=False, desc="eval"):
        images, labels = images.to(device), labels.to(device)
        hits += int(correct_under_attack(model, images, labels, attack).sum())
        seen += len(labels)
    return hits, seen


def accuracy(model: nn.Module, dataset: ImageTensors, attack: Callable | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu", limit: int | None = None,
             progress: bool = False) -> float:
    """Accuracy in [0,1] on the first ``limit`` images of ``dataset`` under ``attack``."""
    if limit is not None:
        dataset = dataset.subset(torch.arange(min(limit, len(dataset))))
    hits, seen = count_correct(model, dataset, attack, batch_size, device, progress)
    return hits / max(seen, 1)


def sharded_accuracy(model: nn.Module, dataset: ImageTensors, attack: Callable | None = None,
                     device: str | torch.device = "cpu", limit: int | None = None) -> float:
    """``accuracy`` with the images split across the ranks and the counts summed; every rank
    must call it. One process: exactly ``accuracy``."""
    if limit is not None:
        dataset = dataset.subset(torch.arange(min(limit, len(dataset))))
    if distributed.world().size > 1:
        dataset = dataset.subset(distributed.shard_indices(len(dataset)))
    hits, seen = count_correct(model, dataset, attack, device=device)
    totals = distributed.reduce_sums({"hits": hits, "seen": seen})
    return totals["hits"] / max(totals["seen"], 1)


def validation_metrics(model: nn.Module, dataset: ImageTensors, cfg: dict[str, Any], device: torch.device,
                       robust: bool = True) -> dict[str, float]:
    """Per-epoch validation of a classifier stage: clean accuracy on ``dataset`` and, if
    ``robust``, accuracy under ``cfg['val_attack']`` (PGD-``val_steps`` at ``eps``, seeded) on its
    first ``val_adv_images`` images. Under torchrun every rank validates its share of the images."""
    model.eval()
    metrics = {"clean_acc": sharded_accuracy(model, dataset, device=device)}
    if robust:
        attack = build_attack(cfg.get("val_attack", "pgd"), model, cfg["eps"], cfg.get("val_steps", 10),
                              num_classes=getattr(model, "num_classes", 10))
        torch.manual_seed(cfg.get("seed", 0))
        metrics["robust_acc"] = sharded_accuracy(model, dataset, attack, device=device,
                                                 limit=cfg.get("val_adv_images", 1000))
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
    The state is keyed by attack, eps, seed, steps and batch size (a batch size above the number
    of images counts as that number: it is the same single batch) and holds each batch's per-image
    results; change any and it recomputes, except the batch size: images already attacked in
    batches of another size are read from that entry (marked ``copied_from`` in the state).
    With ``read_only`` nothing is computed: each attack reports the leading batches already in
    the state (attacks with none are left out). ``on_batch(done, total)`` is called after each
    batch (the app's progress bar).

    Returns:
        ``{"accuracy": {attack: acc}, "n_images": {attack: n}, "correct": {attack: [0/1 per image]},
        "seconds": {attack: s}, "computed_on": {attack: [hardware that computed its batches]}}``.
    """
    state: dict[str, Any] = {}
    if state_path is not None and Path(state_path).is_file():
        state = normalise_state_keys(json.loads(Path(state_path).read_text()))
    model.eval()
    out: dict[str, Any] = {"accuracy": {}, "n_images": {}, "correct": {}, "seconds": {}, "computed_on": {}}
    where = compute_label(device)
    for name in attacks:
        n = min((limits or {}).get(name, len(dataset)), len(dataset))
        subset = dataset.subset(torch.arange(n))
        n_steps = (steps or {}).get(name)
        key = json.dumps([name, eps, seed, n_steps, min(batch_size, n)])
        done: dict[str, Any] = state.setdefault(key, {"batches": {}, "seconds": 0.0})
        other_key, other = None, None  # the same run at another batch size: looked up if a batch is missing
        unsaved_copies = False
        attack = None if name == "clean" else build_attack(name, model, eps, n_steps, seed, model.num_classes)
        if distributed.world().size > 1 and not read_only:
            _deal_batches(model, subset, attack, done, batch_size, seed, device, progress, name,
                          save=lambda: _save_state(state_path, state))
        correct: list[int] = []
        loader = make_loader(subset, batch_size, shuffle=False)
        for index, (images, labels) in enumerate(tqdm(loader, disable=not progress, desc=name, leave=False)):
            # A stored batch is reused only if it covers the same images (a different --limit
            # changes the length of the last batch).
            begin = len(correct)
            missing = len(done["batches"].get(str(index), ())) != len(labels)
            if missing and other is None:
                other_key, other = _same_run_in_other_batches(state, key)
            if missing and len(other) >= begin + len(labels):
                # The same attack, eps, seed and steps on the same images, stored at another batch
                # size (the eps curve's 100 images at the grid's eps are the first 100 of its
                # AutoAttack run): the grouping only changes which random draws an image gets.
                done["batches"][str(index)] = other[begin:begin + len(labels)]
                done["copied_from"] = other_key
                for where_other in state[other_key].get("computed_on", []):
                    _record_machine(done, where_other)
                unsaved_copies = True  # written with the next computed batch or after the loop
            if len(done["batches"].get(str(index), ())) != len(labels):
                if read_only:
                    break
                start = time.perf_counter()
                # Seed per batch so a resumed run draws the same random starts as an unbroken one.
                torch.manual_seed(seed * 100_003 + index)
                mask = correct_under_attack(model, images.to(device), labels.to(device), attack)
                done["batches"][str(index)] = mask.int().tolist()
                done["seconds"] += time.perf_counter() - start
                _record_machine(done, where)
                if state_path is not None and distributed.is_main():
                    atomic_write_text(state_path, json.dumps(state))
                    unsaved_copies = False
            correct += done["batches"][str(index)]
            if on_batch is not None:
                on_batch(len(correct), n)
        if unsaved_copies and state_path is not None and distributed.is_main() and not read_only:
            atomic_write_text(state_path, json.dumps(state))
        if read_only and not correct:
            continue
        out["accuracy"][name] = sum(correct) / max(len(correct), 1)
        out["n_images"][name] = len(correct)
        out["correct"][name] = correct
        out["seconds"][name] = round(done["seconds"], 2)
        out["computed_on"][name] = list(done.get("computed_on", []))
    return out


def compute_label(device: str | torch.device) -> str:
    """Where a batch was computed, for the provenance of a result: on CUDA the GPU and whether
    cuDNN may use TF32 for convolutions (PyTorch's default), on CPU the processor (the thread
    count does not change a result)."""
    if torch.device(device).type != "cuda":
        return cpu_name()
    return f"{hardware()}, cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}"


def _same_run_in_other_batches(state: dict[str, Any], key: str) -> tuple[str | None, list[int]]:
    """The longest run of leading per-image results stored for ``key``'s attack, eps, seed and
    steps at another batch size (its key and the results in image order; ``(None, [])`` if none)."""
    name, eps, seed, n_steps, batch_size = json.loads(key)
    best: tuple[str | None, list[int]] = (None, [])
    for other_key, entry in state.items():
        if other_key in ("sha256", key) or not isinstance(entry, dict):
            continue
        other = json.loads(other_key)
        if other[:4] != [name, eps, seed, n_steps]:
            continue
        results: list[int] = []
        index = 0
        while str(index) in entry.get("batches", {}):
            batch = entry["batches"][str(index)]
            if len(batch) != other[4] and str(index + 1) in entry["batches"]:
                break  # a short batch that is not the last one: the images after it are unknown
            results += batch
            index += 1
        if len(results) > len(best[1]):
            best = (other_key, results)
    return best


def _record_machine(done: dict[str, Any], where: str) -> None:
    """Add ``where`` to the machines that computed an entry's batches (once)."""
    if where not in done.setdefault("computed_on", []):
        done["computed_on"].append(where)


def normalise_state_keys(state: dict[str, Any]) -> dict[str, Any]:
    """State written before keys used ``min(batch_size, n)``: an entry whose only batch is shorter
    than its key's batch size is that single batch, so it is re-keyed by its length (the images and
    the batch's seed are the same). Entries that would collide are left as they are."""
    out = dict(state)
    for key, entry in state.items():
        if key == "sha256" or not isinstance(entry, dict) or list(entry.get("batches", {})) != ["0"]:
            continue
        name, eps, seed, n_steps, batch_size = json.loads(key)
        length = len(entry["batches"]["0"])
        new_key = json.dumps([name, eps, seed, n_steps, length])
        if length < batch_size and new_key not in out:
            out[new_key] = out.pop(key)
    return out


def _save_state(state_path: str | Path | None, state: dict[str, Any]) -> None:
    if state_path is not None:
        atomic_write_text(state_path, json.dumps(state))


def _deal_batches(model: nn.Module, subset: ImageTensors, attack: Callable | None, done: dict[str, Any],
                  batch_size: int, seed: int, device: str | torch.device, progress: bool, desc: str,
                  save: Callable[[], Any]) -> None:
    """Under torchrun: every batch missing from ``done`` computed by one rank, round-robin.

    Each batch is seeded exactly as in ``evaluate_attacks`` (``seed * 100_003 + index``), so the
    masks are the single-process ones; after every round all ranks share the results and rank 0
    records them with ``save``.
    """
    rank = distributed.world()
    n = len(subset)
    lengths = {i: min(batch_size, n - i * batch_size) for i in range(-(-n // batch_size))}
    missing = [i for i, length in lengths.items() if len(done["batches"].get(str(i), ())) != length]
    rounds = range(0, len(missing), rank.size)
    for first in tqdm(rounds, disable=not (progress and rank.is_main), desc=f"{desc} x{rank.size}", leave=False):
        share = missing[first:first + rank.size]
        result = None
        if rank.rank < len(share):
            index = share[rank.rank]
            start = time.perf_counter()
            torch.manual_seed(seed * 100_003 + index)
            images, labels = subset[torch.arange(index * batch_size, index * batch_size + lengths[index])]
            mask = correct_under_attack(model, images.to(device), labels.to(device), attack)
            result = (index, mask.int().tolist(), time.perf_counter() - start)
        for item in distributed.gather_objects(result):
            if item is not None:
                done["batches"][str(item[0])] = item[1]
                done["seconds"] += item[2]
                _record_machine(done, compute_label(device))
        if rank.is_main:
            save()
