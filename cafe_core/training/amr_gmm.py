"""AMR-GMM training of h (causal estimator) and g (counterfactual generator), method.md section 3.

Adversarial moment restriction solved as a min-max game on a frozen backbone (eval mode):

* max step (g only): loss_g = -mean_i[CE_i(c(F_n + h(g(Z)))) * CE_i(c(F_n + g(Z)))] + lambda * mean((g(Z) - Z)^2)
* min step (h only, g(Z) recomputed after g's step): loss_h = mean_i[CE_i(c(F_n + h(g(Z)))) * CE_i(c(F_n + g(Z)))]

with Z = f(x_adv) - f(x) the feature variation, x_adv = PGD(x) against the full backbone.

Under torchrun h and g use BatchNorm statistics of the whole (all-rank) batch, and each
player's update goes through its own DistributedDataParallel wrapper; the other player, the
frozen backbone and the attack use the plain modules.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..attacks.registry import build_attack
from ..causal.predictions import PREDICTIONS, causal_view, feature_variation
from ..data.datasets import ImageTensors, make_loader
from ..models.estimator import create_estimator
from .trainer import Precision, Runtime, trainable


def moment_product(backbone: nn.Module, causal_estimator: nn.Module, natural: torch.Tensor,
                   counterfactual_shift: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean_i[CE_i(c(F_n + h(g(Z)))) * CE_i(c(F_n + g(Z)))], the AMR-GMM moment (scalar)."""
    ce_causal = F.cross_entropy(backbone.head(natural + causal_estimator(counterfactual_shift)).float(),
                                labels, reduction="none")
    ce_counterfactual = F.cross_entropy(backbone.head(natural + counterfactual_shift).float(), labels,
                                        reduction="none")
    return (ce_causal * ce_counterfactual).mean()


def freeze(backbone: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: the backbone never changes during AMR-GMM."""
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


class AMRStage:
    """The ``amr`` stage for the shared trainer: modules ``h`` and ``g``, one AdamW each.

    Config keys: lr, weight_decay, lambda_ (default 1), attack, steps, eps, val_images.
    """

    name = "amr"
    selection_metric = "causal_acc"

    def __init__(self, backbone: nn.Module, cfg: dict[str, Any], device: torch.device,
                 precision: Precision, runtime: Runtime | None = None) -> None:
        runtime = runtime or Runtime()
        self.backbone = freeze(runtime.place(backbone, device))
        self.cfg = cfg
        self.device = device
        self.precision = precision
        channels = backbone.feature_channels
        self.h = runtime.place(create_estimator(channels), device)
        self.g = runtime.place(create_estimator(channels), device)
        # Each player's update goes through its own DDP wrapper (identity for one process); h and
        # g are small, so never compiled, and their BatchNorm always spans all ranks.
        _, self.h_trainer = trainable(self.h, device, Runtime(), sync_bn=True)
        _, self.g_trainer = trainable(self.g, device, Runtime(), sync_bn=True)
        self.modules = {"h": self.h, "g": self.g}
        kw = dict(lr=cfg.get("lr", 1e-4), weight_decay=cfg.get("weight_decay", 1e-5), amsgrad=True)
        self.optimizers = {"h": torch.optim.AdamW(self.h.parameters(), **kw),
                           "g": torch.optim.AdamW(self.g.parameters(), **kw)}
        self.schedulers: dict[str, Any] = {}
        self.lam = float(cfg.get("lambda_", 1.0))
        self.attack = build_attack(cfg.get("attack", "pgd"), runtime.compiled(self.backbone), cfg["eps"],
                                   cfg.get("steps", 10), num_classes=backbone.num_classes)

    def max_step(self, natural: torch.Tensor, variation: torch.Tensor, labels: torch.Tensor) -> float:
        """Update g to maximise the moment (h fixed), kept near Z by the lambda penalty."""
        self.h.requires_grad_(False)  # gradients flow through h to g, but h's weights need none
        try:
            with self.precision.autocast():
                shift = self.g_trainer(variation)
                loss = -moment_product(self.backbone, self.h, natural, shift, labels)
                loss = loss + self.lam * (shift.float() - variation.float()).pow(2).mean()
            self.precision.step(loss, self.optimizers["g"])
        finally:
            self.h.requires_grad_(True)
        return loss.item()

    def min_step(self, natural: torch.Tensor, variation: torch.Tensor, labels: torch.Tensor) -> float:
        """Update h to minimise the moment on the freshly updated g(Z)."""
        with self.precision.autocast():
            with torch.no_grad():
                shift = self.g(variation)
            loss = moment_product(self.backbone, self.h_trainer, natural, shift, labels)
        self.precision.step(loss, self.optimizers["h"])
        return loss.item()

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        self.h.train()
        self.g.train()
        with self.precision.autocast():
            adversarial = self.attack(images, labels)
            with torch.no_grad():
                natural, variation = feature_variation(self.backbone, images, adversarial)
        # Autocast may hand back half-precision features; h and g train in their own dtype (fp32).
        dtype = next(self.h.parameters()).dtype
        natural, variation = natural.to(dtype), variation.to(dtype)
        loss_g = self.max_step(natural, variation, labels)
        loss_h = self.min_step(natural, variation, labels)
        return {"loss_g": loss_g, "loss_h": loss_h}

    def validate(self, dataset: ImageTensors) -> dict[str, float]:
        return amr_accuracies(self.backbone, self.h, self.g, dataset, self.attack, self.device,
                              limit=self.cfg.get("val_images", 1000), seed=self.cfg.get("seed", 0))


def amr_accuracies(backbone: nn.Module, h: nn.Module, g: nn.Module, dataset: ImageTensors, attack,
                   device: torch.device, limit: int | None = None, seed: int = 0,
                   batch_size: int = 250) -> dict[str, float]:
    """Accuracies (in [0,1]) of the five predictions and mean((h(Z)-Z)^2) on the first ``limit`` images."""
    h_mode, g_mode = h.training, g.training
    h.eval()
    g.eval()
    torch.manual_seed(seed)
    if limit is not None:
        dataset = dataset.subset(torch.arange(min(limit, len(dataset))))
    hits = dict.fromkeys(PREDICTIONS, 0)
    recon = 0.0
    # Under torchrun each rank measures its share of the images and the counts are summed.
    mine = dataset.subset(distributed.shard_indices(len(dataset))) if distributed.world().size > 1 else dataset
    for images, labels in make_loader(mine, batch_size, shuffle=False):
        images, labels = images.to(device), labels.to(device)
        view = causal_view(backbone, h, g, images, attack(images, labels))
        for name in PREDICTIONS:
            hits[name] += int((view.logits[name].argmax(1) == labels).sum())
        recon += float((view.causal_shift - view.feature_variation).pow(2).mean()) * len(labels)
    h.train(h_mode)
    g.train(g_mode)
    totals = distributed.reduce_sums({**hits, "recon_hz": recon})
    n = max(len(dataset), 1)
    # recon_hz = mean((h(Z) - Z)^2): logged, not optimised (method.md section 3).
    return {**{f"{name}_acc": totals[name] / n for name in PREDICTIONS}, "recon_hz": totals["recon_hz"] / n}
