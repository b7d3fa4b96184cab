"""Several classifiers of one architecture run as a single network (grouped convolutions).

Why this exists: on a CPU, one 28x28 image through the lite ResNet costs about 5 ms of
forward+backward, almost all of it per-operator overhead, not arithmetic. The app attacks the
11 defense models of a set on the same image, paying that overhead 11 times per attack step.
Stacking them into one network whose convolutions have ``groups = G`` pays it once: measured
here 54 ms -> 27 ms for one forward+backward of all 11 models. ``torch.func.vmap`` over stacked
weights was tried first and was no faster on this CPU; neither torch nor timm builds such a
stack from trained modules, so it is written here.

Image ``n`` of a batch goes to model ``n % G``; the output rows follow the input rows. Models
are used in eval mode only (BatchNorm with running statistics). Construction checks the stack
against every model on a random batch and raises :class:`StackingError` when the models'
forward does something grouped layers cannot reproduce; callers then fall back to a loop.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..models.base import Normalize


class StackingError(ValueError):
    """The models cannot be stacked (different architectures or unsupported layers)."""


class GroupedLinear(nn.Module):
    """G independent Linear layers on a (N, G * in) input -> (N, G * out), block by block."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # (G, out, in)
        bias = [layer.bias for layer in layers]
        self.bias = nn.Parameter(torch.stack([b.detach() for b in bias])) if bias[0] is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, out_features, in_features = self.weight.shape
        y = torch.einsum("ngi,goi->ngo", x.reshape(x.shape[0], groups, in_features), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(x.shape[0], groups * out_features)


def _signature(model: nn.Module) -> tuple:
    return (type(model).__name__, tuple((k, tuple(v.shape)) for k, v in model.state_dict().items()))


def _stack_module(template: nn.Module, parts: Sequence[nn.Module]) -> nn.Module | None:
    """The grouped replacement of one leaf module, None to keep it, StackingError if unsupported."""
    groups = len(parts)
    if isinstance(template, nn.Conv2d):
        if template.padding_mode != "zeros":
            raise StackingError(f"unsupported padding mode {template.padding_mode!r}")
        new = nn.Conv2d(template.in_channels * groups, template.out_channels * groups, template.kernel_size,
                        template.stride, template.padding, template.dilation, template.groups * groups,
                        bias=template.bias is not None)
        new.weight.data = torch.cat([p.weight.detach() for p in parts])
        if template.bias is not None:
            new.bias.data = torch.cat([p.bias.detach() for p in parts])
        return new
    if isinstance(template, nn.BatchNorm2d):
        if not template.track_running_stats or not template.affine:
            raise StackingError("BatchNorm2d without running statistics or affine parameters")
        new = nn.BatchNorm2d(template.num_features * groups, eps=template.eps)
        new.weight.data = torch.cat([p.weight.detach() for p in parts])
        new.bias.data = torch.cat([p.bias.detach() for p in parts])
        new.running_mean = torch.cat([p.running_mean for p in parts])
        new.running_var = torch.cat([p.running_var for p in parts])
        return new
    if isinstance(template, nn.Linear):
        return GroupedLinear(parts)
    if isinstance(template, Normalize):
        new = copy.deepcopy(template)
        new.mean = torch.cat([p.mean for p in parts], dim=1)
        new.std = torch.cat([p.std for p in parts], dim=1)
        return new
    if any(True for _ in template.parameters(recurse=False)) or any(True for _ in template.buffers(recurse=False)):
        raise StackingError(f"cannot stack a {type(template).__name__} layer")
    return None


class StackedModels(nn.Module):
    """``G`` same-architecture classifiers as one module: image ``n`` goes to model ``n % G``.

    Args:
        models: the classifiers (same class, same parameter shapes); they are copied, not changed.
        image_size: side of the random images the construction check uses.
        atol: tolerance of the construction check against each model's own output.
    """

    def __init__(self, models: Sequence[nn.Module], image_size: int = 28, atol: float = 1e-4) -> None:
        super().__init__()
        if len(models) < 2:
            raise StackingError("stacking needs at least two models")
        if len({_signature(m) for m in models}) != 1:
            raise StackingError("the models have different architectures")
        self.groups = len(models)
        self.in_channels = int(getattr(models[0], "in_channels", 0)) or None
        self.num_classes = getattr(models[0], "num_classes", None)
        grouped = copy.deepcopy(models[0])
        originals = [dict(m.named_modules()) for m in models]
        for name, module in list(grouped.named_modules()):
            if not name:
                continue
            new = _stack_module(module, [o[name] for o in originals])
            if new is not None:
                parent_name, _, child = name.rpartition(".")
                setattr(grouped.get_submodule(parent_name) if parent_name else grouped, child, new)
        self.network = grouped.eval().requires_grad_(False)
        self._check(models, image_size, atol)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if n % self.groups:
            raise ValueError(f"batch size {n} is not a multiple of the {self.groups} stacked models")
        out = self.network(x.reshape(n // self.groups, self.groups * c, h, w))
        return out.reshape(n, -1)

    def train(self, mode: bool = True) -> "StackedModels":
        """Always eval: the stack holds running BatchNorm statistics only."""
        return super().train(False)

    @torch.no_grad()
    def _check(self, models: Sequence[nn.Module], image_size: int, atol: float) -> None:
        device = next(self.network.parameters()).device
        x = torch.rand(self.groups, self.in_channels or 3, image_size, image_size, device=device)
        modes = [m.training for m in models]
        try:
            for m in models:
                m.eval()
            expected = torch.cat([m(x[i:i + 1]) for i, m in enumerate(models)])
        finally:
            for m, mode in zip(models, modes):
                m.train(mode)
        try:
            got = self(x)
        except RuntimeError as err:
            raise StackingError(f"the stacked network does not reproduce the models' outputs ({err})") from None
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=1e-4):
            raise StackingError("the stacked network does not reproduce the models' outputs")
