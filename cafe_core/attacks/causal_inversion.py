"""Causal inversion (method.md section 4): turn the causal feature into an image.

Starting from the clean image with a uniform random start in the eps_inv ball, take
sign-gradient *descent* steps on KL(softmax(model(x')) || softmax(target logits)), projecting
to the ball around x and to [0,1]. The target is c(F_n + h(Z)) for the analysis and CAFE, or
c(F_n) for the h = 0 control.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchattacks.attack import Attack

# eps_inv by dataset and backbone (method.md section 4). Fashion-MNIST lite: chosen by measuring
# several values with `python -m cafe_core analyze --eps-inv ...` (see benchmarks/results).
EPS_INV = {
    ("cifar10", "vgg16"): 0.03, ("cifar10", "resnet18"): 4 / 255, ("cifar10", "wrn34_10"): 2 / 255,
    ("svhn", "vgg16"): 4 / 255, ("svhn", "resnet18"): 1 / 255, ("svhn", "wrn34_10"): 1 / 255,
    ("tiny-imagenet", "vgg16"): 1 / 255, ("tiny-imagenet", "resnet18"): 0.5 / 255,
    ("tiny-imagenet", "wrn34_10"): 0.5 / 255,
}


def prediction_kl(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(logits) || softmax(target_logits)) (N,)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_q = F.log_softmax(target_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


class CausalInversion(Attack):
    """Attack-like callable: ``CausalInversion(model, eps, steps)(images, target_logits)``.

    Args:
        model: classifier on [0,1] images (put in eval mode during the call, then restored).
        eps: eps_inv, the L-inf radius around the clean image.
        steps: sign-gradient steps (3 for the analysis, 10 inside CAFE training).
        alpha: step size (default eps/steps*2.3).
        random_start: uniform start in the eps ball (the method's choice).
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 3, alpha: float | None = None,
                 random_start: bool = True) -> None:
        super().__init__("CausalInversion", model)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps_inv must be in [0, 1], got {eps}")
        self.eps = eps
        self.steps = steps
        self.alpha = alpha if alpha is not None else eps / max(steps, 1) * 2.3
        self.random_start = random_start

    def forward(self, images: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        target = target_logits.detach().to(self.device)
        inverted = images.clone()
        if self.random_start:
            inverted = torch.clamp(inverted + torch.empty_like(inverted).uniform_(-self.eps, self.eps), 0, 1)
        for _ in range(self.steps):
            inverted.requires_grad_(True)
            loss = prediction_kl(self.get_logits(inverted), target).sum()
            grad = torch.autograd.grad(loss, inverted)[0]
            inverted = inverted.detach() - self.alpha * grad.sign()
            inverted = torch.clamp(images + torch.clamp(inverted - images, -self.eps, self.eps), 0, 1).detach()
        return inverted
