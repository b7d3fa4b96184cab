"""The five predictions of method.md section 1, from one clean and one adversarial batch.

Natural c(F_n), Adversarial c(F_a), Causal c(F_n + h(Z)), Counterfactual c(F_n + g(Z)) and
Causal-of-counterfactual c(F_n + h(g(Z))), with Z = F_a - F_n the feature variation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PREDICTIONS = ("natural", "adversarial", "causal", "counterfactual", "causal_of_counterfactual")


@dataclass
class CausalView:
    """Everything computed for a batch: features, variation, estimator outputs and logits."""

    natural_feature: torch.Tensor       # F_n (N, C, H, W)
    feature_variation: torch.Tensor     # Z = F_a - F_n
    causal_shift: torch.Tensor          # h(Z)
    counterfactual_shift: torch.Tensor  # g(Z)
    logits: dict[str, torch.Tensor]     # name -> (N, classes), names in PREDICTIONS

    @property
    def causal_feature(self) -> torch.Tensor:
        return self.natural_feature + self.causal_shift

    @property
    def counterfactual_feature(self) -> torch.Tensor:
        return self.natural_feature + self.counterfactual_shift

    @property
    def adversarial_feature(self) -> torch.Tensor:
        return self.natural_feature + self.feature_variation


def feature_variation(backbone: nn.Module, images: torch.Tensor, adversarial: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_n, Z): the natural feature and the feature variation f(x_adv) - f(x)."""
    natural = backbone.features(images)
    return natural, backbone.features(adversarial) - natural


@torch.no_grad()
def causal_view(backbone: nn.Module, causal_estimator: nn.Module, counterfactual_generator: nn.Module,
                images: torch.Tensor, adversarial: torch.Tensor) -> CausalView:
    """All five predictions for a batch (no gradients; modules are used in their current mode)."""
    natural, variation = feature_variation(backbone, images, adversarial)
    causal_shift = causal_estimator(variation)
    cf_shift = counterfactual_generator(variation)
    head = backbone.head
    logits = {
        "natural": head(natural),
        "adversarial": head(natural + variation),
        "causal": head(natural + causal_shift),
        "counterfactual": head(natural + cf_shift),
        "causal_of_counterfactual": head(natural + causal_estimator(cf_shift)),
    }
    return CausalView(natural, variation, causal_shift, cf_shift, logits)


def causal_logits(backbone: nn.Module, causal_estimator: nn.Module | None, images: torch.Tensor,
                  adversarial: torch.Tensor) -> torch.Tensor:
    """c(f(x) + h(f(x_adv) - f(x))); ``causal_estimator=None`` is the h = 0 control (c(F_n))."""
    natural, variation = feature_variation(backbone, images, adversarial)
    if causal_estimator is None:
        return backbone.head(natural)
    return backbone.head(natural + causal_estimator(variation))
