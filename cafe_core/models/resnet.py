"""ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool); split after layer4.

Also hosts ``BasicBlock``, reused by the CPU ``lite`` backbone.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Backbone, PoolLinearHead
from .registry import MODELS


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and a projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet_body(in_channels: int, widths: Sequence[int], blocks: Sequence[int]) -> tuple[nn.Sequential, int]:
    """Stem conv + stages of BasicBlocks (first stage stride 1, later stages stride 2)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU()]
    in_planes = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for i in range(count):
            stride = 2 if (stage > 0 and i == 0) else 1
            layers.append(BasicBlock(in_planes, width, stride))
            in_planes = width
    return nn.Sequential(*layers), in_planes


class ResNet(Backbone):
    """CIFAR-style ResNet; the feature is the output of the last stage (before pooling)."""

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], in_channels: int = 3,
                 num_classes: int = 10, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, num_classes, mean, std)
        self.body, self.feature_channels = resnet_body(in_channels, widths, blocks)
        self.classifier = PoolLinearHead(self.feature_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@MODELS.register("resnet18")
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (11M parameters); feature 512x4x4 on 32x32 inputs."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), **kwargs)
