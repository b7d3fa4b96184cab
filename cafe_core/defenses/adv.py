"""ADV: PGD adversarial training (Madry et al. 2018), method.md section 5."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DEFENSES, Defense, Logs, accuracy_of


class ADV(Defense):
    """loss = CE(net(x_adv), y), with x_adv from PGD on CE (the base class's attack)."""

    name = "adv"

    def loss(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             adversarial: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        adv_logits = net(adversarial).float()
        loss = F.cross_entropy(adv_logits, labels)
        return loss, {"ce_adv": loss.item(), "adv_acc": accuracy_of(adv_logits, labels)}


@DEFENSES.register("adv")
def _adv(eps: float, steps: int = 10, std_model: nn.Module | None = None) -> ADV:
    return ADV(eps, steps)
