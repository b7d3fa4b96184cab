"""Backbones by name, each with ``features()``/``head()`` (method.md section 1)."""
from __future__ import annotations

from typing import Sequence

from . import lite, resnet, vgg, wrn  # noqa: F401  (importing registers the models)
from .base import Backbone
from .registry import MODELS


def create_model(name: str, in_channels: int = 3, num_classes: int = 10,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Backbone:
    """Build a registered backbone.

    Args:
        name: one of ``MODELS.names()`` (``lite``, ``resnet18``, ``vgg16``, ``wrn34_10``).
        in_channels: image channels (1 for Fashion-MNIST, 3 otherwise).
        num_classes: number of output logits.
        mean, std: per-channel normalisation constants of the dataset.
    """
    return MODELS.build(name, in_channels=in_channels, num_classes=num_classes, mean=mean, std=std)


__all__ = ["Backbone", "MODELS", "create_model"]
