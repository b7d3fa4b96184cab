"""Every defense of a checkpoint set under the same attack on the same image (the app's table).

Each model is attacked white-box on its own gradients with the same attack, radius, steps and
seed. For the attacks that always work on the whole batch (FGSM, PGD, CW-inf) the models are
attacked together as one :class:`~cafe_core.attacks.stacking.StackedModels` network (each model gets its
own copy of the image; the gradients are each model's own), which halves the time of the app's
defense table on a CPU. The others (APGD, AutoAttack, Square) attack subsets of a batch, so
the models run in turn. With stacking, the random start of each model is drawn from one
seeded stream instead of each model restarting it; the attack is otherwise the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attacks.registry import seeded_attack
from ..attacks.stacking import StackedModels, StackingError
from ..data.datasets import get_info
from ..defenses.cafe_mode import CafeMode
from ..evaluation.grid_rows import grid_models
from ..evaluation.names import defense_name
from ..io.checkpoints import load_backbone

# Attacks whose every step uses the whole batch (so image n stays with model n % G).
STACKABLE_ATTACKS = frozenset({"fgsm", "fgsm_rs", "pgd", "cw"})


@dataclass(frozen=True)
class TableModel:
    """One network of the comparison table: the undefended network or a grid row."""

    label: str          # checkpoint stem, e.g. "standard", "defense_trades-cafe"
    defense: str        # "none" for the undefended network
    mode: CafeMode
    path: Path


@dataclass(frozen=True)
class DefenseRow:
    """One model of the comparison table (``cafe``: ``CafeMode.to_json()``, as in the robustness JSON)."""

    label: str
    name: str
    defense: str
    cafe: bool | str
    clean_label: int
    clean_confidence: float
    adversarial_label: int
    adversarial_confidence: float
    clean_correct: bool | None
    adversarial_correct: bool | None


class DefenseSet:
    """The undefended network and the grid checkpoints of a folder, loaded once for
    :func:`compare_defenses` (the table's first row, "no defense", is ``standard.safetensors``)."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        candidates = [TableModel("standard", "none", CafeMode.BASELINE, Path(folder) / "standard.safetensors")]
        candidates += [TableModel(m.label, m.defense, m.mode, m.path) for m in grid_models(folder)]
        self.models: list[TableModel] = [m for m in candidates if m.path.is_file()]
        loaded = [load_backbone(m.path, device=device) for m in self.models]
        self.cards = [card for _, card in loaded]
        self.networks = [model.eval() for model, _ in loaded]
        self._stack: StackedModels | None | bool = False  # False: not built yet

    def __len__(self) -> int:
        return len(self.models)

    def stacked(self) -> StackedModels | None:
        """All networks as one grouped network (built on first use); None if they cannot be stacked."""
        if self._stack is False:
            try:
                size = get_info(self.cards[0]["dataset"]).image_size if self.cards else 28
                self._stack = StackedModels(self.networks, image_size=size)
            except (StackingError, KeyError):
                self._stack = None
        return self._stack


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
    adversarial = defense_adversarials(defenses, image, label, attack, eps, steps, seed, target)
    clean, adv = defense_probabilities(defenses, image.expand(len(defenses), *image.shape[1:]), adversarial)
    rows = []
    for model, p_clean, p_adv in zip(defenses.models, clean, adv):
        c, a = int(p_clean.argmax()), int(p_adv.argmax())
        rows.append(DefenseRow(model.label, defense_name(model.defense, model.mode), model.defense,
                               model.mode.to_json(),
                               c, float(p_clean[c]), a, float(p_adv[a]),
                               None if true_label is None else c == true_label,
                               None if true_label is None else a == true_label).__dict__)
    return rows


def defense_adversarials(defenses: DefenseSet, image: torch.Tensor, label: int, attack: str, eps: float,
                         steps: int | None, seed: int, target: int | None = None) -> torch.Tensor:
    """Each model's own adversarial image of ``image`` (1, C, H, W): a (G, C, H, W) tensor in model order."""
    if not len(defenses):
        return image[:0]
    stack = defenses.stacked() if attack in STACKABLE_ATTACKS else None
    if stack is not None:
        x = image.to(next(stack.parameters()).device).expand(stack.groups, *image.shape[1:]).contiguous()
        return seeded_attack(attack, stack, x, label, eps, steps, seed, target)
    return torch.cat([seeded_attack(attack, net, image.to(next(net.parameters()).device), label, eps, steps, seed, target)
                      for net in defenses.networks])


@torch.no_grad()
def defense_probabilities(defenses: DefenseSet, *batches: torch.Tensor) -> list[torch.Tensor]:
    """Softmax probabilities (G, classes) of model ``i`` on image ``i`` of each (G, C, H, W) batch."""
    stack = defenses.stacked()
    out = []
    for batch in batches:
        if stack is not None:
            logits = stack(batch.to(next(stack.parameters()).device).contiguous())
        else:
            logits = torch.cat([net(batch[i:i + 1].to(next(net.parameters()).device))
                                for i, net in enumerate(defenses.networks)])
        out.append(torch.softmax(logits.float(), 1))
    return out
