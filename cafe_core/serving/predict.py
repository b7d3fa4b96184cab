"""Classify one image with a loaded checkpoint; results as plain data for the app and CLI."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.datasets import DatasetInfo, get_info
from ..io.checkpoints import CheckpointError, load_backbone
from ..io.provenance import REPO_ROOT

DEFAULT_CHECKPOINTS = REPO_ROOT / "checkpoints" / "fashion_lite"


@dataclass(frozen=True)
class Prediction:
    """Top label and the full probability vector of one image."""

    label: int
    name: str
    confidence: float
    probabilities: dict[str, float]


@dataclass
class LoadedModel:
    """A backbone with its card and the dataset facts the app needs to feed it."""

    model: nn.Module
    card: dict[str, Any]
    info: DatasetInfo

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names or tuple(str(i) for i in range(self.info.num_classes))


def checkpoint_dir(explicit: str | Path | None = None) -> Path:
    """The checkpoint set to serve: ``explicit``, else $CAFE_CHECKPOINTS, else the shipped set."""
    chosen = explicit or os.environ.get("CAFE_CHECKPOINTS") or DEFAULT_CHECKPOINTS
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    return path


def load_stage(folder: str | Path, stage: str = "adv") -> LoadedModel:
    """Load ``<folder>/<stage>.safetensors`` (verified against its card) in eval mode on CPU."""
    if not stage.replace("_", "").replace("-", "").isalnum():
        raise CheckpointError(f"invalid checkpoint name {stage!r}")
    model, card = load_backbone(Path(folder) / f"{stage}.safetensors")
    return LoadedModel(model, card, get_info(card["dataset"]))


@torch.no_grad()
def classify(loaded: LoadedModel, images: torch.Tensor) -> Prediction:
    """Prediction for a (1, C, H, W) image in [0,1]."""
    loaded.model.eval()
    probs = torch.softmax(loaded.model(images).float(), dim=1)[0]
    label = int(probs.argmax())
    names = loaded.class_names
    return Prediction(label, names[label], float(probs[label]),
                      {names[i]: float(p) for i, p in enumerate(probs)})
