"""MART (Wang et al. 2020), method.md section 5.

    loss = CE(z_adv, y) + NLL(log(1.0001 - p_adv), y')                       (boosted CE)
           + beta * mean_i[ KL_i(p_clean || p_adv) * (1 - p_clean,i[y_i]) ]   (misclassification-aware KL)

with y' the most likely wrong class under p_adv and beta = 3. The adversarial example is PGD
on CE, as in MART's code. Differences from that code, all numerically negligible: the KL uses
log-softmax instead of log(p + 1e-12), and the weight is 1 - p rather than 1.0000001 - p.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.causal_inversion import prediction_kl
from .base import DEFENSES, Defense, Logs, accuracy_of


def top_wrong_class(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """y': per row, the most probable class other than the true one (N,)."""
    top2 = probs.topk(2, dim=1).indices
    return torch.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])


def mart_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor,
              beta: float) -> tuple[torch.Tensor, Logs]:
    """MART's loss from clean and adversarial logits (N, classes); see the module docstring."""
    clean_logits, adv_logits = clean_logits.float(), adv_logits.float()
    adv_probs = F.softmax(adv_logits, dim=1)
    clean_probs = F.softmax(clean_logits, dim=1)
    # 1.0001 keeps the log finite when p_adv of y' reaches 1.
    bce = F.cross_entropy(adv_logits, labels) + F.nll_loss(torch.log(1.0001 - adv_probs),
                                                            top_wrong_class(adv_probs, labels))
    true_prob = clean_probs.gather(1, labels[:, None]).squeeze(1)
    robust = (prediction_kl(clean_logits, adv_logits) * (1 - true_prob)).mean()
    loss = bce + beta * robust
    return loss, {"bce": bce.item(), "weighted_kl": robust.item(),
                  "clean_acc": accuracy_of(clean_logits, labels), "adv_acc": accuracy_of(adv_logits, labels)}


class MART(Defense):
    """MART with beta = 3; x_adv from PGD on CE (base class)."""

    name = "mart"

    def __init__(self, eps: float, steps: int = 10, beta: float = 3.0) -> None:
        super().__init__(eps, steps)
        self.beta = beta

    def loss(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             adversarial: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        return mart_loss(net(images), net(adversarial), labels, self.beta)


@DEFENSES.register("mart")
def _mart(eps: float, steps: int = 10, std_model: nn.Module | None = None) -> MART:
    return MART(eps, steps)
