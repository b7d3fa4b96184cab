"""The ``standard`` and ``adv`` stages: train a backbone on clean or adversarial images.

``adv`` is PGD-AT (Madry et al.) or, for the CPU lite recipe, fast FGSM-RS AT (Wong et al.
2020); both minimise CE(net(x_adv), y). Validation: clean accuracy on the whole validation
split and, for ``adv``, robust accuracy under a validation attack on its first images.

Under torchrun only the training forward goes through DistributedDataParallel (``trainer``);
the attack runs on the model itself, in eval mode, as on one device.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.registry import build_attack
from ..data.datasets import ImageTensors
from ..evaluation.evaluate import validation_metrics
from .trainer import Precision, Runtime, one_cycle, trainable


class ClassifierStage:
    """Train ``model`` with SGD + one-cycle LR on clean (``standard``) or adversarial (``adv``) inputs.

    Config keys: lr, momentum, weight_decay, warmup (fraction of steps rising), attack
    ('none' or an attack name), steps, eps; validation: val_attack, val_steps, val_adv_images.
    """

    def __init__(self, name: str, model: nn.Module, cfg: dict[str, Any], steps_per_epoch: int,
                 device: torch.device, precision: Precision, runtime: Runtime | None = None) -> None:
        runtime = runtime or Runtime()
        self.name = name
        self.model = runtime.place(model, device)
        self.net, self.trainer = trainable(self.model, device, runtime, sync_bn=runtime.sync_bn)
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.modules = {"model": self.model}
        opt = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                              weight_decay=cfg.get("weight_decay", 5e-4))
        self.optimizers = {"model": opt}
        factor = one_cycle(steps_per_epoch * cfg["epochs"], cfg.get("warmup", 0.2))
        self.schedulers = {"model": torch.optim.lr_scheduler.LambdaLR(opt, factor)}
        self.attack = None
        if cfg.get("attack", "none") != "none":
            self.attack = build_attack(cfg["attack"], self.net, cfg["eps"], cfg.get("steps"),
                                       num_classes=model.num_classes)
        self.selection_metric = "robust_acc" if self.attack is not None else "clean_acc"
        self.loss = nn.CrossEntropyLoss()

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        self.trainer.train()
        with self.precision.autocast():
            inputs = self.attack(images, labels) if self.attack is not None else images
            logits = self.trainer(inputs)
            loss = self.loss(logits.float(), labels)
        self.precision.step(loss, self.optimizers["model"])
        self.schedulers["model"].step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == labels).float().mean().item()}

    def validate(self, dataset: ImageTensors) -> dict[str, float]:
        return validation_metrics(self.model, dataset, self.cfg, self.device, robust=self.attack is not None)
