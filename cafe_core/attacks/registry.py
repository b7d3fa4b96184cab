"""Attacks by name (inputs and outputs in [0,1], model in eval mode during the attack).

Every attack is a ``torchattacks.Attack``: the base class handles eval mode and restores the
model's train/eval mode afterwards. We use torchattacks' own FGSM, FFGSM (FGSM with random
start, "fast AT"), PGD, APGD and its AutoAttack components; torchattacks has no L-inf
Carlini-Wagner attack, so ``CWInf`` (PGD on the CW margin loss) is written here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torchattacks
from torch import nn
from torchattacks.attack import Attack

from ..registry import Registry
from .inference import QueryModel

ATTACKS: Registry = Registry("attack")


class CWInf(Attack):
    """PGD on the Carlini-Wagner margin loss in the L-inf ball (method.md section 6).

    Args:
        model: classifier on [0,1] images.
        eps: L-inf radius. alpha: step size (default 3*eps/steps, i.e. 3*eps/100 for 100 steps).
        steps: iterations. kappa: margin cap (0 = stop pushing once misclassified).
        random_start: uniform start in the eps ball.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float | None = None,
                 steps: int = 100, kappa: float = 0.0, random_start: bool = True) -> None:
        super().__init__("CWInf", model)
        self.eps = eps
        self.steps = steps
        self.alpha = alpha if alpha is not None else 3 * eps / steps
        self.kappa = kappa
        self.random_start = random_start
        self.supported_mode = ["default", "targeted"]

    def margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """min(max_{j != y} z_j - z_y, kappa) per sample: rises until misclassified by kappa."""
        one_hot = nn.functional.one_hot(labels, logits.shape[1]).bool()
        true = logits[one_hot]
        other = logits.masked_fill(one_hot, float("-inf")).amax(dim=1)
        return torch.clamp(other - true, max=self.kappa)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target = self.get_target_label(images, labels) if self.targeted else None
        adv = images.clone()
        if self.random_start:
            adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-self.eps, self.eps), 0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            logits = self.get_logits(adv)
            # Untargeted: raise the best wrong logit over the true one; targeted: the reverse.
            cost = -self.margin(logits, target).sum() if target is not None else self.margin(logits, labels).sum()
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            adv = torch.clamp(images + torch.clamp(adv - images, -self.eps, self.eps), 0, 1).detach()
        return adv


@dataclass(frozen=True)
class AttackInfo:
    """What the app and CLI show about an attack."""

    name: str
    label: str
    default_steps: int | None


ATTACK_INFO = {
    "fgsm": AttackInfo("fgsm", "FGSM", None),
    "fgsm_rs": AttackInfo("fgsm_rs", "FGSM + random start (fast AT)", None),
    "pgd": AttackInfo("pgd", "PGD", 30),
    "cw": AttackInfo("cw", "CW-inf (PGD on CW margin)", 100),
    "apgd_ce": AttackInfo("apgd_ce", "APGD-CE", 100),
    "apgd_dlr": AttackInfo("apgd_dlr", "APGD-DLR", 100),
    "autoattack": AttackInfo("autoattack", "AutoAttack (standard)", 100),
    "square": AttackInfo("square", "Square (black-box, queries)", 1000),
}


@ATTACKS.register("fgsm")
def _fgsm(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
          num_classes: int = 10) -> Attack:
    return torchattacks.FGSM(model, eps=eps)


@ATTACKS.register("fgsm_rs")
def _fgsm_rs(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
             num_classes: int = 10) -> Attack:
    # Wong et al. (2020) fast AT: uniform start, one step of 1.25 * eps.
    return torchattacks.FFGSM(model, eps=eps, alpha=1.25 * eps)


@ATTACKS.register("pgd")
def _pgd(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
         num_classes: int = 10) -> Attack:
    steps = steps or 30
    return torchattacks.PGD(model, eps=eps, alpha=eps / steps * 2.3, steps=steps, random_start=True)


@ATTACKS.register("cw")
def _cw(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
        num_classes: int = 10) -> Attack:
    return CWInf(model, eps=eps, steps=steps or 100)


@ATTACKS.register("apgd_ce")
def _apgd_ce(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
             num_classes: int = 10) -> Attack:
    return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps or 100, loss="ce", seed=seed)


@ATTACKS.register("apgd_dlr")
def _apgd_dlr(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
              num_classes: int = 10) -> Attack:
    return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps or 100, loss="dlr", seed=seed)


class QuerySquare(torchattacks.Square):
    """torchattacks' Square with its queries sent through ``inference.QueryModel``.

    Square never needs a gradient, so every forward it makes can use a compiled, weight-frozen
    copy of the model (1.5-2x faster forward on CPU, depending on batch size); the copy is checked against the model on the
    first batch and dropped if it disagrees, and not made at all when the query budget is too
    small to repay compiling (``inference.COMPILE_MIN_IMAGES``, unless ``fast_queries`` is given).
    ``self.model`` stays the real model, so eval mode, the device and MultiAttack's bookkeeping
    are torchattacks' own.
    """

    def __init__(self, model: nn.Module, fast_queries: bool | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.queries = QueryModel(model, enabled=fast_queries, budget=self.n_queries)

    def get_logits(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        if self._normalization_applied is False:
            inputs = self.normalize(inputs)
        return self.queries(inputs)


@ATTACKS.register("square")
def _square(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
            num_classes: int = 10) -> Attack:
    """Gradient-free Square attack; ``steps`` is its query budget. Used by the masking check."""
    return QuerySquare(model, norm="Linf", eps=eps, n_queries=steps or 1000, seed=seed)


@ATTACKS.register("autoattack")
def _autoattack(model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
                num_classes: int = 10) -> Attack:
    """Standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square(5000), each on what survived.

    torchattacks.AutoAttack(version="standard") builds its APGD/APGD-T/FAB-T with 10 steps;
    Croce & Hein's standard AutoAttack uses 100, so we assemble the same four torchattacks
    components with the original budgets.
    """
    steps = steps or 100
    parts = [
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, loss="ce", seed=seed),
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, seed=seed, n_classes=num_classes),
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, seed=seed, multi_targeted=True,
                         n_classes=num_classes),
        QuerySquare(model, norm="Linf", eps=eps, n_queries=5000, seed=seed),
    ]
    return torchattacks.MultiAttack(parts)


def build_attack(name: str, model: nn.Module, eps: float, steps: int | None = None, seed: int = 0,
                 num_classes: int = 10) -> Attack:
    """Build attack ``name`` against ``model`` at L-inf radius ``eps`` (pixels in [0,1]).

    Args:
        name: one of ``ATTACKS.names()``.
        eps: radius in [0, 1].
        steps: iterations for iterative attacks (``None`` = the method's default).
        seed: seed of attacks that own one (APGD, FAB, Square); others use torch's global RNG.
        num_classes: classes of the model (targeted components of AutoAttack).
    Returns:
        A callable ``attack(images, labels) -> adversarial images``.
    """
    if not (0.0 <= float(eps) <= 1.0) or eps != eps:
        raise ValueError(f"eps must be in [0, 1] (pixel scale), got {eps}")
    if steps is not None and int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    builder: Callable[..., Attack] = ATTACKS.get(name)
    return builder(model, eps=float(eps), steps=steps, seed=seed, num_classes=num_classes)


def seeded_attack(name: str, model: nn.Module, images: torch.Tensor, label: int, eps: float,
                  steps: int | None = None, seed: int = 0, target: int | None = None) -> torch.Tensor:
    """Attack every image of ``images`` away from class ``label`` (toward ``target`` if given),
    with torch seeded by ``seed`` first so the random start is reproducible."""
    attacker = build_attack(name, model, eps, steps, seed, getattr(model, "num_classes", None) or 10)
    if target is not None:
        attacker.set_mode_targeted_by_function(lambda x, y: torch.full_like(y, int(target)), quiet=True)
    torch.manual_seed(seed)
    return attacker(images, torch.full((images.shape[0],), int(label), device=images.device))
