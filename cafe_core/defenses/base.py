"""What every defense provides (method.md section 5), and the registry that names them.

A defense owns two things: how it makes the adversarial example it trains on, and its loss.
The trainer (``DefenseStage``) runs one defense per step as

    x_adv = defense.adversarial(net, x, y)                  # input generation, eval mode
    with defense.weight_perturbation(net, x, y, x_adv):     # AWP/HELP only; else a no-op
        loss, logs = defense.loss(net, x, y, x_adv)         # train mode
        optimizer step

so that adversarial weight perturbation is applied and removed around exactly one step.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

import torch
from torch import nn

from ..attacks.registry import build_attack
from ..registry import Registry

DEFENSES: Registry = Registry("defense")

Logs = dict[str, float]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block and restore its previous train/eval flag."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for a helper network that must never change."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def accuracy_of(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


class Defense:
    """Base class: PGD on cross-entropy for the adversarial example, no weight perturbation.

    Args:
        eps: L-inf radius of the training attack on [0,1] pixels (method.md: 0.03 on CIFAR-10).
        steps: attack iterations (PGD-10 in the recipe); step size eps/steps*2.3 as everywhere
            else in this project.
    """

    name = "base"

    def __init__(self, eps: float, steps: int = 10) -> None:
        if not 0.0 <= float(eps) <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (pixel scale), got {eps}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.eps = float(eps)
        self.steps = int(steps)

    def adversarial(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x_adv (N, C, H, W) in [0,1] within eps of ``images``: PGD on CE against the current net."""
        num_classes = getattr(net, "num_classes", 10)
        return build_attack("pgd", net, self.eps, self.steps, num_classes=num_classes)(images, labels)

    def loss(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             adversarial: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        """Scalar training loss (float32) and float logs for the progress bar."""
        raise NotImplementedError

    def weight_perturbation(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                            adversarial: torch.Tensor) -> ContextManager[None]:
        """A context manager to hold around the loss and the optimizer step (no-op by default)."""
        return nullcontext()


DefenseBuilder = Callable[..., Defense]
