"""WideResNet-34-10 (pre-activation); the feature is taken after the final BN+ReLU (640x8x8)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Backbone, PoolLinearHead
from .registry import MODELS


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-conv with a 1x1 projection when needed."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return out + skip


class WideResNet(Backbone):
    def __init__(self, depth: int = 34, widen: int = 10, in_channels: int = 3, num_classes: int = 10,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, num_classes, mean, std)
        if (depth - 4) % 6:
            raise ValueError("WideResNet depth must be 6n+4")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        in_planes = widths[0]
        for stage, width in enumerate(widths[1:]):
            for i in range(n):
                layers.append(WideBlock(in_planes, width, 2 if (stage > 0 and i == 0) else 1))
                in_planes = width
        layers += [nn.BatchNorm2d(in_planes), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.feature_channels = in_planes
        self.classifier = PoolLinearHead(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@MODELS.register("wrn34_10")
def wrn34_10(**kwargs) -> WideResNet:
    """WRN-34-10 (46M parameters)."""
    return WideResNet(34, 10, **kwargs)
