"""Every defense of a checkpoint set under the same attack on the same image (the app's table).

Each model is attacked white-box on its own gradients with the same attack, radius, steps and
seed. (Stacking the models with ``torch.func.vmap`` was measured: no faster on a CPU for a single
28x28 image, where the convolutions themselves dominate, so the models simply run in turn.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .attacks import build_attack
from .checkpoints import load_backbone
from .robustness import GridModel, grid_models



@dataclass(frozen=True)
class DefenseRow:
    """One model of the comparison table."""

    defense: str
    cafe: bool | str
    clean_label: int
    clean_confidence: float
    adversarial_label: int
    adversarial_confidence: float
    clean_correct: bool | None
    adversarial_correct: bool | None


class DefenseSet:
    """The grid checkpoints of a folder, loaded once for :func:`compare_defenses`."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        self.models: list[GridModel] = [m for m in grid_models(folder) if m.path.is_file()]
        loaded = [load_backbone(m.path, device=device) for m in self.models]
        self.cards = [card for _, card in loaded]
        self.networks = [model.eval() for model, _ in loaded]

    def __len__(self) -> int:
        return len(self.models)


def compare_defenses(defenses: DefenseSet, image: torch.Tensor, label: int, true_label: int | None,
                     attack: str = "pgd", eps: float = 0.1, steps: int | None = 20, seed: int = 0,
                     target: int | None = None) -> list[dict[str, Any]]:
    """Attack every model of ``defenses`` (white-box, its own gradients) on ``image`` (1, C, H, W).

    Args:
        label: the class the untargeted attack pushes away from (the true class if known).
        true_label: marks predictions right/wrong (None: unknown).
    Returns:
        One plain dict per model (``DefenseRow`` fields), in grid order.
    """
    rows = []
    for model, net in zip(defenses.models, defenses.networks):
        device = next(net.parameters()).device
        x = image.to(device)
        attacker = build_attack(attack, net, eps, steps, seed, getattr(net, "num_classes", 10))
        if target is not None:
            attacker.set_mode_targeted_by_function(lambda images, labels: torch.full_like(labels, int(target)),
                                                   quiet=True)
        torch.manual_seed(seed)
        adversarial = attacker(x, torch.tensor([int(label)], device=device))
        with torch.no_grad():
            clean = torch.softmax(net(x).float(), 1)[0]
            adv = torch.softmax(net(adversarial).float(), 1)[0]
        c, a = int(clean.argmax()), int(adv.argmax())
        rows.append(DefenseRow(model.defense, model.cafe, c, float(clean[c]), a, float(adv[a]),
                               None if true_label is None else c == true_label,
                               None if true_label is None else a == true_label).__dict__)
    return rows
