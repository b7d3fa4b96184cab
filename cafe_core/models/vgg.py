"""VGG-16-BN with one Linear classifier after global pooling.

Split (method.md section 1): the feature is the BatchNorm output of conv5_3 *before* its
ReLU (so it can be negative); the head applies that ReLU, pools and classifies.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .base import Backbone, PoolLinearHead
from .registry import MODELS

# Channels per conv, "M" = 2x2 max-pool. The pool after conv5_3 is dropped: the feature is
# 512x2x2 on 32x32 inputs, as in the paper's split.
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG(Backbone):
    def __init__(self, plan: Sequence = VGG16_PLAN, in_channels: int = 3, num_classes: int = 10,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, num_classes, mean, std)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU()]
            channels = int(item)
        layers.pop()  # conv5_3's ReLU moves into the head
        self.body = nn.Sequential(*layers)
        self.feature_channels = channels
        self.classifier = PoolLinearHead(channels, num_classes, activation=nn.ReLU())


@MODELS.register("vgg16")
def vgg16(**kwargs) -> VGG:
    """VGG-16-BN (15M parameters)."""
    return VGG(VGG16_PLAN, **kwargs)
