"""The CPU ``lite`` backbone: a 3-stage ResNet of width 32 (about 0.3M parameters).

Feature: output of the third stage, 128x7x7 on 28x28 inputs (128x8x8 on 32x32).
"""
from __future__ import annotations

from .registry import MODELS
from .resnet import ResNet


@MODELS.register("lite")
def lite(**kwargs) -> ResNet:
    """One BasicBlock per stage, widths 32/64/128."""
    return ResNet((32, 64, 128), (1, 1, 1), **kwargs)
