"""The ``defense`` stage: fine-tune a defended network, with or without CAFE (method.md section 5).

Recipe: start from the ADV checkpoint, SGD lr 1e-3, momentum 0.9, weight decay 2e-4, one
triangular cycle 0 -> lr -> 0 stepped per batch, PGD-10 at eps. Per batch:

1. inputs at the current weights, with the net in eval mode (attack base class):
   x_adv from the defense's own attack, and x_inv from causal inversion when CAFE is on;
2. AWP/HELP only: compute the weight perturbation v and add it;
3. net in train mode: loss = defense loss (+ L_CAFE), one optimizer step;
4. AWP/HELP only: remove v, keeping the optimizer's update.

Validation matches ``ClassifierStage``: clean accuracy on the validation split and PGD robust
accuracy on its first ``val_adv_images`` images; checkpoints are selected on robust accuracy.

Under torchrun only the loss's forward passes go through DistributedDataParallel; x_adv, x_inv
and AWP's weight perturbation are made with the net itself (its parameters are the ones DDP
trains, so the perturbation is seen by the wrapped forward). Helpers stay unwrapped.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.datasets import ImageTensors
from ..defenses import build_cafe, build_defense
from ..evaluation.evaluate import validation_metrics
from .trainer import Precision, Runtime, one_cycle, trainable


class DefenseStage:
    """Fine-tune ``model`` with a named defense and an optional CAFE term.

    Config keys: defense (a ``DEFENSES`` name), cafe (None/"none", "cafe", "control-h0"),
    cafe_weight (multiplies L_CAFE, default 1 as in the paper), eps, steps, eps_inv, inversion_steps, lr, momentum, weight_decay, warmup, epochs;
    validation: val_attack, val_steps, val_adv_images, seed.

    Args:
        model: the network to fine-tune (normally the ADV backbone); the only saved module.
        steps_per_epoch: batches per epoch, for the one-cycle schedule.
        causal_estimator: frozen h for ``cafe="cafe"`` (from ``analysis.load_amr``).
        std_model: frozen standard model for ``defense="help"``.
    """

    name = "defense"
    selection_metric = "robust_acc"

    def __init__(self, model: nn.Module, cfg: dict[str, Any], steps_per_epoch: int, device: torch.device,
                 precision: Precision, *, causal_estimator: nn.Module | None = None,
                 std_model: nn.Module | None = None, runtime: Runtime | None = None) -> None:
        runtime = runtime or Runtime()
        self.model = runtime.place(model, device)
        self.net, self.trainer = trainable(self.model, device, runtime, sync_bn=runtime.sync_bn)
        self.cfg = cfg
        self.device = device
        self.precision = precision
        # Helpers live on the device but outside ``modules``: they are inputs (with their own
        # checkpoints), never trained or saved here.
        self.defense = build_defense(cfg["defense"], cfg["eps"], cfg.get("steps", 10),
                                     std_model=runtime.place(std_model, device) if std_model is not None else None)
        self.cafe = build_cafe(cfg.get("cafe"), runtime.place(causal_estimator, device)
                               if causal_estimator is not None else None,
                               cfg.get("eps_inv", 0.0), cfg.get("inversion_steps", 10))
        self.label = self.defense.name + (self.cafe.mode.suffix if self.cafe is not None else "")
        self.modules = {"model": self.model}
        opt = torch.optim.SGD(self.model.parameters(), lr=cfg.get("lr", 1e-3), momentum=cfg.get("momentum", 0.9),
                              weight_decay=cfg.get("weight_decay", 2e-4))
        self.optimizers = {"model": opt}
        factor = one_cycle(steps_per_epoch * cfg["epochs"], cfg.get("warmup", 0.5))
        self.schedulers = {"model": torch.optim.lr_scheduler.LambdaLR(opt, factor)}

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        net, trainer, optimizer = self.net, self.trainer, self.optimizers["model"]
        trainer.train()
        with self.precision.autocast():
            adversarial = self.defense.adversarial(net, images, labels)
            inverted = self.cafe.invert(net, images, adversarial) if self.cafe is not None else None
            # Computed eagerly here, at the unperturbed weights; applied by the ``with`` below.
            # The plain module: its parameter names and state dict, not a wrapper's.
            perturbation = self.defense.weight_perturbation(self.model, images, labels, adversarial)
        trainer.train()
        with perturbation:
            with self.precision.autocast():
                loss, logs = self.defense.loss(trainer, images, labels, adversarial)
                logs["defense_loss"] = loss.item()
                if self.cafe is not None:
                    cafe_loss, cafe_logs = self.cafe.loss(trainer, adversarial, inverted)
                    loss = loss + self.cfg.get("cafe_weight", 1.0) * cafe_loss
                    logs.update(cafe_logs)
            self.precision.step(loss, optimizer)
        self.schedulers["model"].step()
        return {"loss": loss.item(), **logs}

    def validate(self, dataset: ImageTensors) -> dict[str, float]:
        return validation_metrics(self.model, dataset, self.cfg, self.device, robust=True)
