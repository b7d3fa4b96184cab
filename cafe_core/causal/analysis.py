"""Causal analysis over a dataset (method.md sections 1 and 4), returned as plain numbers.

For each test image: attack it, compute the five predictions, invert the causal prediction
into an image (causal inversion), and measure KL(P_inv||P_causal), KL(P_clean||P_causal) and
KL(P_adv||P_causal) (batch means, x1000). Controls the paper lacks: h = 0 (the causal feature
collapses to F_n, so Causal = Natural) and h applied to a shuffled Z (another image's
variation), plus ||h(Z)||/||Z|| and ||g(Z)||/||Z||, so readers see what h adds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..attacks.causal_inversion import EPS_INV, CausalInversion, prediction_kl
from ..attacks.registry import build_attack
from ..data.datasets import ImageTensors, make_loader
from ..io.checkpoints import CheckpointError, load_backbone, load_checkpoint, load_into, sha256_file
from ..models.estimator import create_estimator
from .predictions import PREDICTIONS, causal_view


@dataclass
class AMRBundle:
    """A frozen backbone with its trained causal estimator h and counterfactual generator g."""

    backbone: nn.Module
    causal_estimator: nn.Module
    counterfactual_generator: nn.Module
    card: dict[str, Any]
    backbone_card: dict[str, Any]


def resolve_parent(amr_path: Path, card: dict[str, Any]) -> Path:
    """The parent backbone file: the recorded path, else the same file name beside the AMR file."""
    recorded = Path(card["parent"]["path"])
    for candidate in (recorded, amr_path.parent / recorded.name):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"parent backbone {recorded} of {amr_path.name} not found")


def load_amr(path: str | Path, device: str | torch.device = "cpu") -> AMRBundle:
    """Load an AMR-GMM checkpoint (h and g) and its parent backbone, checking they belong together."""
    path = Path(path)
    states, card = load_checkpoint(path, {"stage": "amr"})
    parent = resolve_parent(path, card)
    if sha256_file(parent) != card["parent"]["sha256"]:
        raise CheckpointError(f"{parent.name} is not the backbone {path.name} was trained on (sha256 differs)")
    backbone, backbone_card = load_backbone(parent, backbone=card["backbone"], device=device)
    h = create_estimator(backbone.feature_channels)
    g = create_estimator(backbone.feature_channels)
    load_into(h, states["h"], "causal estimator h")
    load_into(g, states["g"], "counterfactual generator g")
    for p in backbone.parameters():
        p.requires_grad_(False)
    return AMRBundle(backbone.eval(), h.to(device).eval(), g.to(device).eval(), card, backbone_card)


def analysis_settings(card: dict[str, Any]) -> dict[str, Any]:
    """The ``[analysis]`` table of the recipe a checkpoint was trained with (empty if unknown)."""
    from ..io.config import load_config

    try:
        return dict(load_config(card.get("config_name") or "").get("analysis", {}))
    except FileNotFoundError:
        return dict(card.get("config", {}).get("analysis", {}))


def default_eps_inv(card: dict[str, Any]) -> float:
    """eps_inv from the recipe's [analysis] table, else the paper's table (method.md section 4)."""
    settings = analysis_settings(card)
    if "eps_inv" in settings:
        return float(settings["eps_inv"])
    if (card["dataset"], card["backbone"]) in EPS_INV:
        return EPS_INV[(card["dataset"], card["backbone"])]
    raise ValueError(f"no eps_inv known for {card['dataset']}/{card['backbone']}; pass one explicitly")


def _norm_ratio(shift: torch.Tensor, variation: torch.Tensor) -> torch.Tensor:
    return shift.flatten(1).norm(dim=1) / variation.flatten(1).norm(dim=1).clamp_min(1e-12)


class _Tally:
    """Sums of per-image values, averaged at the end."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, **values: torch.Tensor) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.float().sum())

    def mean(self, key: str, scale: float = 1.0) -> float:
        return scale * self.sums[key] / max(self.n, 1)


def causal_analysis(bundle: AMRBundle, dataset: ImageTensors, attack: str = "pgd", eps: float | None = None,
                    steps: int | None = 20, eps_inv: float | None = None, inversion_steps: int = 3,
                    seed: int = 0, batch_size: int = 500, device: str | torch.device = "cpu",
                    progress: bool = True) -> dict[str, Any]:
    """Accuracies, KL distances and controls of ``bundle`` on ``dataset`` under ``attack``.

    Returns:
        ``{"accuracy": {natural, adversarial, causal, counterfactual, causal_of_counterfactual,
        inverted}, "kl_x1000": {inversion, clean, adversarial}, "controls": {"h_zero": ...,
        "shuffled_z": ...}, "norm_ratio": {...}, "attack": {...}, "inversion": {...}, "n_images"}``
        with accuracies in [0,1].
    """
    backbone, h, g = bundle.backbone, bundle.causal_estimator, bundle.counterfactual_generator
    card = bundle.card
    eps = float(card["eps"] if eps is None else eps)
    eps_inv = float(default_eps_inv(card) if eps_inv is None else eps_inv)
    attacker = build_attack(attack, backbone, eps, steps, seed, backbone.num_classes)
    inverter = CausalInversion(backbone, eps_inv, inversion_steps)
    t = _Tally()
    for index, (images, labels) in enumerate(tqdm(make_loader(dataset, batch_size, shuffle=False),
                                                  disable=not progress, desc="causal analysis")):
        images, labels = images.to(device), labels.to(device)
        torch.manual_seed(seed * 100_003 + index)
        adversarial = attacker(images, labels)
        view = causal_view(backbone, h, g, images, adversarial)
        logits = view.logits
        correct = {f"acc_{n}": logits[n].argmax(1) == labels for n in PREDICTIONS}
        inverted = inverter(images, logits["causal"])
        with torch.no_grad():
            inv_logits = backbone(inverted)
        # Controls: h = 0 (target c(F_n)) and h on another image's variation (shuffled Z).
        perm = torch.roll(torch.arange(len(labels), device=labels.device), 1)
        with torch.no_grad():
            shuffled = backbone.head(view.natural_feature + h(view.feature_variation[perm]))
        inv_h0 = inverter(images, logits["natural"])
        inv_shuf = inverter(images, shuffled)
        with torch.no_grad():
            inv_h0_logits, inv_shuf_logits = backbone(inv_h0), backbone(inv_shuf)
        t.add(**correct, acc_inverted=inv_logits.argmax(1) == labels,
              kl_inversion=prediction_kl(inv_logits, logits["causal"]),
              kl_clean=prediction_kl(logits["natural"], logits["causal"]),
              kl_adversarial=prediction_kl(logits["adversarial"], logits["causal"]),
              h0_acc_causal=logits["natural"].argmax(1) == labels,
              h0_acc_inverted=inv_h0_logits.argmax(1) == labels,
              h0_kl_inversion=prediction_kl(inv_h0_logits, logits["natural"]),
              h0_kl_clean=torch.zeros(len(labels), device=labels.device),
              h0_kl_adversarial=prediction_kl(logits["adversarial"], logits["natural"]),
              sh_acc_causal=shuffled.argmax(1) == labels,
              sh_acc_inverted=inv_shuf_logits.argmax(1) == labels,
              sh_kl_inversion=prediction_kl(inv_shuf_logits, shuffled),
              sh_kl_clean=prediction_kl(logits["natural"], shuffled),
              sh_kl_adversarial=prediction_kl(logits["adversarial"], shuffled),
              ratio_h=_norm_ratio(view.causal_shift, view.feature_variation),
              ratio_g=_norm_ratio(view.counterfactual_shift, view.feature_variation))
        t.n += len(labels)

    def control(prefix: str) -> dict[str, Any]:
        return {"accuracy": {"causal": t.mean(f"{prefix}_acc_causal"), "inverted": t.mean(f"{prefix}_acc_inverted")},
                "kl_x1000": {k: t.mean(f"{prefix}_kl_{k}", 1000) for k in ("inversion", "clean", "adversarial")}}

    return {
        "accuracy": {**{n: t.mean(f"acc_{n}") for n in PREDICTIONS}, "inverted": t.mean("acc_inverted")},
        "kl_x1000": {k: t.mean(f"kl_{k}", 1000) for k in ("inversion", "clean", "adversarial")},
        "controls": {"h_zero": control("h0"), "shuffled_z": control("sh")},
        "norm_ratio": {"h_z_over_z": t.mean("ratio_h"), "g_z_over_z": t.mean("ratio_g")},
        "attack": {"name": attack, "eps": eps, "steps": steps, "seed": seed},
        "inversion": {"eps_inv": eps_inv, "steps": inversion_steps},
        "n_images": t.n,
    }
