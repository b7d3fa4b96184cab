"""Everything the app's Explore view shows for one image, as plain data (no UI types).

One call attacks the image, computes the five predictions of method.md section 1, the
causal inversion image (section 4), the Fig. 3-style feature inversions, per-channel values of
Z, h(Z) and g(Z), and the three KL distances. The app, the CLI report and the tests share it.
Given a bare backbone instead of an AMR-GMM bundle (a network with no trained h and g, such as
the undefended one), it computes only what needs no h and g: the attack, the Natural and
Adversarial predictions and their feature inversions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.causal_inversion import CausalInversion, prediction_kl
from ..attacks.registry import seeded_attack
from ..causal.analysis import AMRBundle, default_eps_inv
from ..causal.feature_inversion import APP_INVERSION, InversionSetting, fig3_targets
from ..causal.predictions import PREDICTIONS, causal_view
from ..data.images import image_to_uint8

TARGETED = {"pgd", "fgsm", "cw"}  # attacks whose torchattacks class supports a target class


@dataclass(frozen=True)
class PredictionView:
    """One prediction: label, its name, confidence, whether it is right, and all probabilities."""

    label: int
    class_name: str
    confidence: float
    correct: bool | None
    probabilities: list[float]


@dataclass
class ExploreResult:
    """Images as (H, W, 3) uint8 arrays; numbers as floats; ready for JSON via ``to_json``."""

    images: dict[str, np.ndarray]
    perturbation_scale: float
    linf: float
    predictions: dict[str, PredictionView]
    channels: dict[str, list]
    kl_x1000: dict[str, float]
    class_names: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def has_causal(self) -> bool:
        """Whether h and g were available (causal and counterfactual panels exist)."""
        return "causal" in self.predictions

    def to_json(self) -> dict[str, Any]:
        """Numbers and settings only (images are left out)."""
        return {"settings": self.settings, "linf": self.linf, "perturbation_scale": self.perturbation_scale,
                "predictions": {k: asdict(v) for k, v in self.predictions.items()},
                "channels": self.channels, "kl_x1000": self.kl_x1000, "class_names": list(self.class_names)}


def _view(logits: torch.Tensor, names: tuple[str, ...], true_label: int | None) -> PredictionView:
    probs = torch.softmax(logits.float(), dim=1)[0]
    label = int(probs.argmax())
    return PredictionView(label, names[label], float(probs[label]),
                          None if true_label is None else label == true_label, [float(p) for p in probs])


def explore(model: AMRBundle | nn.Module, image: torch.Tensor, true_label: int | None, class_names: tuple[str, ...],
            attack: str = "pgd", eps: float | None = None, steps: int | None = 20, seed: int = 0,
            target: int | None = None, eps_inv: float | None = None, inversion_steps: int = 3,
            inversion: InversionSetting = APP_INVERSION, feature_steps: int | None = None,
            top_channels: int = 12, network: str = "adv") -> ExploreResult:
    """Attack ``image`` (1, C, H, W in [0,1]) and compute the whole causal picture.

    Args:
        model: the network with its trained h and g (an AMRBundle), or a bare backbone (then no
            causal panels: see the module docstring). A bare backbone needs ``eps``.
        true_label: the image's class if known (marks predictions right/wrong; else the
            clean prediction is attacked).
        target: optional target class (targeted attack; FGSM, PGD and CW-inf only).
        inversion: start, steps and prior of the Fig. 3-style feature inversions.
        feature_steps: if given, replaces ``inversion.steps``.
        network: the name of the attacked network, recorded in the settings.
    """
    bundle = model if isinstance(model, AMRBundle) else None
    backbone = bundle.backbone if bundle is not None else model
    card = bundle.card if bundle is not None else {}
    if eps is None and bundle is None:
        raise ValueError("eps is required when the network has no AMR-GMM card")
    eps = float(card["eps"] if eps is None else eps)
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, C, H, W), got {tuple(image.shape)}")
    if target is not None and not 0 <= int(target) < len(class_names):
        raise ValueError(f"target class must be in [0, {len(class_names) - 1}], got {target}")
    if target is not None and attack not in TARGETED:
        raise ValueError(f"{attack} has no targeted mode here; use one of {sorted(TARGETED)}")
    if feature_steps is not None:
        inversion = replace(inversion, steps=int(feature_steps))
    device = next(backbone.parameters()).device
    image = image.to(device)
    with torch.no_grad():
        clean_label = int(backbone(image).argmax(1))
    label = clean_label if true_label is None else int(true_label)
    adversarial = seeded_attack(attack, backbone, image, label, eps, steps, seed, target)
    delta = adversarial - image
    linf = float(delta.abs().max())
    scale = 0.5 / linf if linf > 0 else 1.0
    images = {"clean": image_to_uint8(image), "adversarial": image_to_uint8(adversarial),
              "perturbation": image_to_uint8(0.5 + delta * scale)}
    settings = {"attack": attack, "eps": eps, "steps": steps, "seed": seed, "target": target, "network": network,
                "feature_inversion": asdict(inversion), "feature_steps": inversion.steps, "true_label": true_label}
    if bundle is None:
        with torch.no_grad():
            natural, adv_feature = backbone.features(image), backbone.features(adversarial)
            logits = {"natural": backbone.head(natural), "adversarial": backbone.head(adv_feature)}
        targets = {"natural": natural, "adversarial": adv_feature}
        inversions = inversion.invert(backbone, targets, tuple(image.shape), seed=seed, device=device)
        images.update({f"feature_{k}": image_to_uint8(v) for k, v in inversions.images.items()})
        predictions = {name: _view(v, class_names, true_label) for name, v in logits.items()}
        return ExploreResult(images, scale, linf, predictions, {}, {}, tuple(class_names), settings)

    h, g = bundle.causal_estimator, bundle.counterfactual_generator
    eps_inv = float(default_eps_inv(card) if eps_inv is None else eps_inv)
    view = causal_view(backbone, h, g, image, adversarial)
    inverted = CausalInversion(backbone, eps_inv, inversion_steps)(image, view.logits["causal"])
    with torch.no_grad():
        inv_logits = backbone(inverted)
    inversions = inversion.invert(backbone, fig3_targets(view), tuple(image.shape), seed=seed, device=device)
    images["inverted"] = image_to_uint8(inverted)
    images.update({f"feature_{k}": image_to_uint8(v) for k, v in inversions.images.items()})
    predictions = {name: _view(view.logits[name], class_names, true_label) for name in PREDICTIONS}
    predictions["inverted"] = _view(inv_logits, class_names, true_label)
    z = view.feature_variation.mean(dim=(2, 3))[0]
    hz, gz = view.causal_shift.mean(dim=(2, 3))[0], view.counterfactual_shift.mean(dim=(2, 3))[0]
    order = torch.argsort(z.abs() + hz.abs() + gz.abs(), descending=True)[:top_channels]
    channels = {"index": order.tolist(), "z": z[order].tolist(), "h_z": hz[order].tolist(), "g_z": gz[order].tolist()}
    causal = view.logits["causal"]
    kl = {"inversion": prediction_kl(inv_logits, causal), "clean": prediction_kl(view.logits["natural"], causal),
          "adversarial": prediction_kl(view.logits["adversarial"], causal)}
    settings.update({"eps_inv": eps_inv, "inversion_steps": inversion_steps, "amr_sha256": card.get("sha256"),
                     "backbone_sha256": card.get("parent", {}).get("sha256")})
    return ExploreResult(images, scale, linf, predictions, channels,
                         {k: 1000 * float(v.mean()) for k, v in kl.items()}, tuple(class_names), settings)
