"""Build and run a named training stage from a config: the one entry point the CLI, the
pipeline and the app's Train tab share."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoints import CheckpointError, load_backbone, sha256_file
from .config import stage_config
from .data import get_info, load_split
from .models import create_model
from .train import FitResult, Precision, fit, pick_device, seed_everything

STAGES = ("standard", "adv", "amr")
PARENT_STAGE = {"amr": "adv"}


def default_output(cfg: dict[str, Any], stage: str) -> Path:
    return Path(cfg["checkpoint_dir"]) / f"{stage}.safetensors"


def parent_record(path: Path, card: dict[str, Any]) -> dict[str, Any]:
    """How a card names its parent: path, sha256 of the weights, stage and metrics."""
    return {"path": str(path), "sha256": sha256_file(path), "stage": card["stage"],
            "backbone": card["backbone"], "metrics": card.get("metrics", {})}


def run_stage(config: dict[str, Any], stage: str, *, parent: str | Path | None = None,
              out: str | Path | None = None, limit: int | None = None, data_root: str | None = None,
              device: str | torch.device | None = None, progress: bool = True, command: str = "",
              on_epoch: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> FitResult:
    """Train ``stage`` of ``config`` and write its checkpoint + card.

    Args:
        parent: checkpoint the stage starts from (``amr``: the ADV backbone; default
            ``<checkpoint_dir>/adv.safetensors``).
        limit: train on the first N training images (default: the config's ``train_limit``).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    device = torch.device(device) if device is not None else pick_device()
    cfg = stage_config(config, stage)
    info = get_info(cfg["dataset"])
    limit = limit if limit is not None else cfg.get("train_limit")
    train_set = load_split(info.name, "train", data_root, cfg["n_val"], cfg["seed"], limit=limit)
    val_set = load_split(info.name, "val", data_root, cfg["n_val"], cfg["seed"])
    seed_everything(cfg["seed"])
    precision = Precision(device)
    card: dict[str, Any] = {"dataset": info.name, "backbone": cfg["backbone"], "stage": stage,
                            "parent": None, "config_name": config.get("name"), "config": cfg,
                            "eps": cfg["eps"], "n_train_images": len(train_set),
                            "n_val_images": len(val_set), "command": command}
    if stage in PARENT_STAGE:
        parent_path = Path(parent) if parent else default_output(cfg, PARENT_STAGE[stage])
        backbone, parent_card = load_backbone(parent_path, backbone=cfg["backbone"], device=device)
        if parent_card["dataset"] != info.name:
            raise CheckpointError(f"parent {parent_path.name} was trained on {parent_card['dataset']}, "
                                  f"config asks for {info.name}")
        card["parent"] = parent_record(parent_path, parent_card)
        from .amr_gmm import AMRStage

        runner = AMRStage(backbone, cfg, device, precision)
    else:
        from .classifier_stages import ClassifierStage

        model = create_model(cfg["backbone"], info.channels, info.num_classes, info.mean, info.std)
        runner = ClassifierStage(stage, model, cfg, len(train_set) // cfg["batch_size"], device, precision)
    return fit(runner, train_set, val_set, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
               seed=cfg["seed"], out=Path(out) if out else default_output(cfg, stage), card=card,
               device=device, progress=progress, on_epoch=on_epoch, should_stop=should_stop)
