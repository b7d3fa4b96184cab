"""The backbone interface every registered classifier follows (method.md section 1).

A backbone is split at an intermediate layer: ``features(x)`` is f (image in [0,1] ->
feature map) and ``head(feature)`` is c (feature map -> logits), with
``head(features(x)) == forward(x)``. Normalisation is the first layer of f, so attacks
work in pixel space.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with constants stored as buffers (saved in checkpoints)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PoolLinearHead(nn.Module):
    """c(F): optional activation, global average pool, one Linear layer."""

    def __init__(self, channels: int, num_classes: int, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        pooled = self.activation(feature).mean(dim=(2, 3))
        return self.fc(pooled)


class Backbone(nn.Module):
    """Base class: subclasses set ``self.body`` (f without normalisation) and ``self.classifier`` (c).

    Attributes:
        feature_channels: channels C of the feature map F = f(x), used to size h and g.
    """

    feature_channels: int

    def __init__(self, in_channels: int, num_classes: int, mean: Sequence[float] | None,
                 std: Sequence[float] | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        mean = list(mean) if mean is not None else [0.5] * in_channels
        std = list(std) if std is not None else [0.5] * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.normalize = Normalize(mean, std)
        self.body: nn.Module
        self.classifier: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): images (N, C_in, H, W) in [0,1] -> feature map (N, C, h, w)."""
        return self.body(self.normalize(x))

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        """c(F): feature map (N, C, h, w) -> logits (N, num_classes)."""
        return self.classifier(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
