"""Where the evidence for a class sits, before and after the attack: captum attributions.

Integrated Gradients (zero baseline) and Saliency for the clean, adversarial and causally
inverted images, all toward the same class (the true class when known), so a visitor sees the
evidence move. Plain data out: per-pixel maps and (H, W, 3) uint8 overlays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.images import image_to_uint8

METHODS = ("integrated_gradients", "saliency")


@dataclass
class Attributions:
    """maps[method][image_name]: (H, W) float32 map summed over channels (signed for IG);
    overlays[method][image_name]: (H, W, 3) uint8; ``target``: the class explained."""

    target: int
    maps: dict[str, dict[str, np.ndarray]]
    overlays: dict[str, dict[str, np.ndarray]]


def overlay(image: torch.Tensor, attribution: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Grey image with the attribution on top: red = evidence for the class, blue = against.

    Scaled by the map's own 99th percentile of |value|, so each panel uses the full colour range.
    """
    grey = image_to_uint8(image).astype(np.float32).mean(axis=2, keepdims=True) / 255.0
    scale = float(np.percentile(np.abs(attribution), 99)) or 1.0
    a = np.clip(attribution / scale, -1, 1)[..., None]
    colour = np.concatenate([np.clip(a, 0, 1), np.zeros_like(a), np.clip(-a, 0, 1)], axis=2)
    weight = alpha * np.abs(a)
    out = (1 - weight) * grey + weight * colour
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def attribute(model: nn.Module, images: dict[str, torch.Tensor], target: int, ig_steps: int = 32
              ) -> Attributions:
    """IG and Saliency of ``model`` toward class ``target`` for each named (1, C, H, W) image.

    The images are attributed in one batch per method; the model is put in eval mode and
    restored, and its parameters receive no gradients.
    """
    # Imported here: the app's Explore worker processes import this module but never attribute,
    # and captum (with matplotlib) adds ~55 MB to each of them.
    from captum.attr import IntegratedGradients, Saliency

    names = list(images)
    batch = torch.cat([images[n].detach().float() for n in names])
    was_training = model.training
    model.eval()
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        ig = IntegratedGradients(model).attribute(batch, baselines=torch.zeros_like(batch), target=int(target),
                                                  n_steps=ig_steps, internal_batch_size=len(batch) * ig_steps)
        sal = Saliency(model).attribute(batch.clone().requires_grad_(True), target=int(target), abs=True)
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)
        model.train(was_training)
    maps: dict[str, dict[str, np.ndarray]] = {}
    overlays: dict[str, dict[str, np.ndarray]] = {}
    for method, values in (("integrated_gradients", ig), ("saliency", sal)):
        per_pixel = values.detach().sum(dim=1).cpu().numpy().astype(np.float32)
        maps[method] = {n: per_pixel[i] for i, n in enumerate(names)}
        overlays[method] = {n: overlay(batch[i], per_pixel[i]) for i, n in enumerate(names)}
    return Attributions(int(target), maps, overlays)
