"""HELP: helper-based adversarial training (Rade & Moosavi-Dezfooli 2022), method.md section 5.

    loss = AWP-TRADES(beta 4) + 0.25 * CE(net(x_help), argmax std_model(x_adv)),
    x_help = clamp(x + 2 (x_adv - x), 0, 1)

The helper example lies twice as far as x_adv and is labelled by a frozen standard
(non-robust) model, which teaches the net not to push its margin past what is needed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .awp import AWP
from .base import DEFENSES, Logs, eval_mode, freeze


class HELP(AWP):
    """AWP + TRADES + the helper term.

    Args:
        eps, steps: TRADES' KL attack.
        std_model: the standard model of the pipeline's ``standard`` stage; frozen here
            (eval mode, no gradients) and never updated.
        beta: TRADES weight. helper_weight: weight of the helper CE (0.25).
        helper_scale: how far the helper example goes along x_adv - x (2).
        gamma, proxy_lr: AWP settings.
    """

    name = "help"

    def __init__(self, eps: float, steps: int, std_model: nn.Module, beta: float = 4.0,
                 helper_weight: float = 0.25, helper_scale: float = 2.0, gamma: float = 0.01,
                 proxy_lr: float = 0.01) -> None:
        super().__init__(eps, steps, beta, gamma, proxy_lr)
        self.std_model = freeze(std_model)
        self.helper_weight = helper_weight
        self.helper_scale = helper_scale

    def helper_inputs(self, images: torch.Tensor, adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_help in [0,1], helper labels argmax std_model(x_adv))."""
        with torch.no_grad(), eval_mode(self.std_model):
            helper_labels = self.std_model(adversarial).argmax(dim=1)
        helper = torch.clamp(images + self.helper_scale * (adversarial - images), 0, 1)
        return helper.detach(), helper_labels

    def loss(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             adversarial: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        loss, logs = super().loss(net, images, labels, adversarial)
        helper, helper_labels = self.helper_inputs(images, adversarial)
        helper_ce = F.cross_entropy(net(helper).float(), helper_labels)
        logs["ce_helper"] = helper_ce.item()
        return loss + self.helper_weight * helper_ce, logs


@DEFENSES.register("help")
def _help(eps: float, steps: int = 10, std_model: nn.Module | None = None) -> HELP:
    if std_model is None:
        raise ValueError("defense 'help' needs std_model (the pipeline's standard, non-robust model)")
    return HELP(eps, steps, std_model)
