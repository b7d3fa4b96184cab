"""TRADES (Zhang et al. 2019), method.md section 5: CE(net(x), y) + beta * KL(p_clean || p_adv).

The adversarial example maximises the same KL term (TRADES' own attack), not the CE, because
that is the quantity the regulariser then minimises. AWP and HELP reuse both pieces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchattacks.attack import Attack

from ..attacks.causal_inversion import prediction_kl
from .base import DEFENSES, Defense, Logs, accuracy_of


class KLPGD(Attack):
    """PGD maximising KL(softmax(model(x)) || softmax(model(x'))) in the L-inf eps ball.

    Args:
        model: classifier on [0,1] images (eval mode during the call, then restored).
        eps: L-inf radius. steps: iterations. alpha: step size (default eps/steps*2.3).
        start_std: std of the Gaussian start; at x' = x the KL is at its minimum and its
            gradient is zero, so TRADES starts from x + 0.001 * N(0, 1).
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 10, alpha: float | None = None,
                 start_std: float = 0.001) -> None:
        super().__init__("KLPGD", model)
        self.eps = eps
        self.steps = steps
        self.alpha = alpha if alpha is not None else eps / steps * 2.3
        self.start_std = start_std

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        with torch.no_grad():
            clean_logits = self.get_logits(images).detach()
        # Unlike TRADES' code we clamp the start to [0,1]: every input the model sees is an image.
        adv = torch.clamp(images + self.start_std * torch.randn_like(images), 0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            loss = prediction_kl(clean_logits, self.get_logits(adv)).sum()
            grad = torch.autograd.grad(loss, adv)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            adv = torch.clamp(images + torch.clamp(adv - images, -self.eps, self.eps), 0, 1).detach()
        return adv


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor,
                beta: float) -> tuple[torch.Tensor, Logs]:
    """CE(z_clean, y) + beta * mean_i KL(p_clean,i || p_adv,i); gradients flow through both sides."""
    ce = F.cross_entropy(clean_logits.float(), labels)
    kl = prediction_kl(clean_logits, adv_logits).mean()
    loss = ce + beta * kl
    return loss, {"ce_clean": ce.item(), "kl": kl.item(), "clean_acc": accuracy_of(clean_logits, labels),
                  "adv_acc": accuracy_of(adv_logits, labels)}


class TRADES(Defense):
    """TRADES with beta = 2 (the CAFE reference code's value).

    Args:
        eps, steps: the KL attack's radius and iterations.
        beta: weight of the KL(p_clean || p_adv) term.
    """

    name = "trades"

    def __init__(self, eps: float, steps: int = 10, beta: float = 2.0) -> None:
        super().__init__(eps, steps)
        self.beta = beta

    def adversarial(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x_adv maximising KL(p_clean || p_adv) (TRADES' attack), within eps and [0,1]."""
        return KLPGD(net, self.eps, self.steps)(images, labels)

    def loss(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             adversarial: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        return trades_loss(net(images), net(adversarial), labels, self.beta)


@DEFENSES.register("trades")
def _trades(eps: float, steps: int = 10, std_model: nn.Module | None = None) -> TRADES:
    return TRADES(eps, steps)
