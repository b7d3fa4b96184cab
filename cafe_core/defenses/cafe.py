"""The CAFE term (causal inoculation), method.md section 5.

    z_causal = c(f(x) + h(f(x_adv) - f(x)))          h frozen, no gradient
    x_inv    = causal inversion of x toward softmax(z_causal)   (method.md section 4)
    L_CAFE   = mean_i KL(softmax(net(x_adv)) || softmax(net(x_inv)))   gradient through both

The control ``h = None`` uses z_causal = c(f(x)) (the h = 0 collapse), so a run with it shows
what the estimated causal feature adds over simply pulling x_adv toward the clean prediction.
"""
from __future__ import annotations

import torch
from torch import nn

from ..attacks.causal_inversion import CausalInversion, prediction_kl
from ..causal.predictions import causal_logits
from .base import Logs, eval_mode, freeze
from .cafe_mode import CafeMode


class CafeTerm:
    """L_CAFE in two halves: ``invert`` makes x_inv (no gradient), ``loss`` compares predictions.

    The split lets the trainer make every input (x_adv, x_inv) at the current weights and
    evaluate every loss term at the same (possibly AWP-perturbed) weights.

    Args:
        causal_estimator: the trained h (frozen here: eval mode, no gradients), or ``None``
            for the h = 0 control.
        eps_inv: L-inf radius of the inversion around x (method.md section 4 table).
        steps: inversion steps (10 inside CAFE training; 3 for Tiny-ImageNet).
    """

    def __init__(self, causal_estimator: nn.Module | None, eps_inv: float, steps: int = 10) -> None:
        self.causal_estimator = freeze(causal_estimator) if causal_estimator is not None else None
        self.eps_inv = float(eps_inv)
        self.steps = int(steps)

    @property
    def mode(self) -> CafeMode:
        return CafeMode.CONTROL_H0 if self.causal_estimator is None else CafeMode.CAFE

    def target(self, net: nn.Module, images: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        """z_causal (N, classes), detached.

        Computed in eval mode: h was trained on eval-mode features of the ADV backbone, and
        train-mode BatchNorm would normalise f(x) and f(x_adv) with different batch statistics
        (and update the running statistics from a no-grad pass).
        """
        with torch.no_grad(), eval_mode(net):
            if self.causal_estimator is not None:
                self.causal_estimator.eval()
            return causal_logits(net, self.causal_estimator, images, adversarial).detach()

    def invert(self, net: nn.Module, images: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        """x_inv (N, C, H, W) in [0,1], within eps_inv of ``images`` (inversion runs in eval mode)."""
        target = self.target(net, images, adversarial)
        return CausalInversion(net, self.eps_inv, self.steps)(images, target)

    def loss(self, net: nn.Module, adversarial: torch.Tensor, inverted: torch.Tensor
             ) -> tuple[torch.Tensor, Logs]:
        """mean_i KL(softmax(net(x_adv)) || softmax(net(x_inv))), differentiable in both."""
        loss = prediction_kl(net(adversarial), net(inverted)).mean()
        return loss, {"cafe": loss.item()}

    def __call__(self, net: nn.Module, images: torch.Tensor, adversarial: torch.Tensor
                 ) -> tuple[torch.Tensor, Logs]:
        """Both halves at once (convenience for analysis and tests)."""
        return self.loss(net, adversarial, self.invert(net, images, adversarial))


def build_cafe(mode: CafeMode | str | None, causal_estimator: nn.Module | None, eps_inv: float,
               steps: int = 10) -> CafeTerm | None:
    """The CAFE term of a mode (a ``CafeMode`` or a config's ``cafe``: None/"none", "cafe",
    "control-h0"): None for the baseline."""
    mode = CafeMode.parse(mode)
    if mode is CafeMode.BASELINE:
        return None
    if mode is CafeMode.CAFE:
        if causal_estimator is None:
            raise ValueError("cafe mode 'cafe' needs the causal estimator h (an AMR-GMM checkpoint)")
        return CafeTerm(causal_estimator, eps_inv, steps)
    return CafeTerm(None, eps_inv, steps)
