"""AWP: adversarial weight perturbation (Wu et al. 2020), method.md section 5.

Each step, a proxy copy of the net takes one plain SGD *ascent* step (lr 0.01) on CE(x_adv).
The per-layer difference d_l = w_proxy,l - w_l is rescaled to gamma * ||w_l|| (gamma 0.01) for
every weight with more than one dimension (conv kernels, linear matrices; BatchNorm and biases
are left alone), added to the net before the loss, and removed after the optimizer step, so the
step's gradient is taken at w + v but the update lands on w. The loss is TRADES with beta 4.

Proxy objective: method.md specifies CE(x_adv) (the CAFE reference code's AWP), which we follow.
AWP's own TRADES script maximises the TRADES objective instead; the CE version needs one forward
pass instead of two and both find a direction that raises the adversarial loss.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from .base import DEFENSES
from .trades import TRADES


class WeightPerturbation:
    """Computes AWP's perturbation v for the current weights of a net.

    Args:
        gamma: relative size of v per layer, ||v_l|| = gamma * ||w_l||.
        lr: learning rate of the proxy's single SGD ascent step (its size does not matter much
            after the rescaling, but it sets the direction when the proxy has BatchNorm).
    """

    def __init__(self, gamma: float = 0.01, lr: float = 0.01) -> None:
        self.gamma = gamma
        self.lr = lr
        self._proxy: nn.Module | None = None
        self._source: nn.Module | None = None

    def _proxy_for(self, net: nn.Module) -> nn.Module:
        # One deep copy per net, refreshed by load_state_dict each step (cheaper than copying).
        if self._source is not net:
            self._proxy, self._source = copy.deepcopy(net), net
            for p in self._proxy.parameters():
                p.requires_grad_(True)
        self._proxy.load_state_dict(net.state_dict())
        return self._proxy

    def compute(self, net: nn.Module, objective: Callable[[nn.Module], torch.Tensor]) -> dict[str, torch.Tensor]:
        """v by parameter name: one ascent step of ``objective(proxy)`` on a proxy copy, rescaled.

        The net itself (weights, BatchNorm statistics, gradients) is not touched.
        """
        proxy = self._proxy_for(net).train()
        optimizer = torch.optim.SGD(proxy.parameters(), lr=self.lr)
        optimizer.zero_grad(set_to_none=True)
        (-objective(proxy).float()).backward()  # minimising -loss is ascent on the loss
        # Under torchrun: the ascent direction of the whole (all-rank) batch, as on one device,
        # so every rank perturbs its identical weights identically.
        distributed.average_gradients(proxy)
        optimizer.step()
        proxy_params = dict(proxy.named_parameters())
        diff: dict[str, torch.Tensor] = {}
        for name, weight in net.named_parameters():
            if weight.dim() <= 1 or "weight" not in name:
                continue
            step = proxy_params[name].detach() - weight.detach()
            diff[name] = self.gamma * weight.detach().norm() / (step.norm() + 1e-20) * step
        return diff


@contextmanager
def perturbed(net: nn.Module, diff: dict[str, torch.Tensor]) -> Iterator[None]:
    """Add ``diff`` to the net's parameters for the block; on exit remove it, keeping any update.

    On exit each perturbed weight becomes w + (w_now - (w + v)): whatever the optimizer did to
    the perturbed weights is kept, the perturbation is not. With no update in between the
    weights come back bit-identical (w + 0), which subtracting v would not guarantee.
    """
    params = dict(net.named_parameters())
    originals = {name: params[name].detach().clone() for name in diff}
    with torch.no_grad():
        for name, v in diff.items():
            params[name].copy_(originals[name] + v)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, v in diff.items():
                # originals + v recomputes the perturbed value exactly (same float addition).
                params[name].copy_(originals[name] + (params[name] - (originals[name] + v)))


class AWP(TRADES):
    """TRADES (beta 4) evaluated at adversarially perturbed weights.

    Args:
        eps, steps: TRADES' KL attack (x_adv is made at the unperturbed weights, as in AWP).
        beta: TRADES weight. gamma, proxy_lr: see ``WeightPerturbation``.
    """

    name = "awp"

    def __init__(self, eps: float, steps: int = 10, beta: float = 4.0, gamma: float = 0.01,
                 proxy_lr: float = 0.01) -> None:
        super().__init__(eps, steps, beta)
        self.perturbation = WeightPerturbation(gamma, proxy_lr)

    def weight_perturbation(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                            adversarial: torch.Tensor) -> ContextManager[None]:
        """Compute v now (proxy ascent on CE(x_adv)); the returned context applies and removes it."""
        diff = self.perturbation.compute(net, lambda proxy: F.cross_entropy(proxy(adversarial).float(), labels))
        return perturbed(net, diff)


@DEFENSES.register("awp")
def _awp(eps: float, steps: int = 10, std_model: nn.Module | None = None) -> AWP:
    return AWP(eps, steps)
