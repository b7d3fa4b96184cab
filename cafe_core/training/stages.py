"""Build and run a named training stage from a config: the one entry point the CLI, the
pipeline and the app's Train tab share."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .. import distributed
from ..data.datasets import get_info, load_split
from ..defenses.cafe_mode import CafeMode
from ..evaluation.grid_rows import GridRow
from ..io.checkpoints import CheckpointError, load_backbone, parent_record
from ..io.config import stage_config
from ..models import create_model
from .trainer import FitResult, Precision, Runtime, fit, pick_device, seed_everything

STAGES = ("standard", "adv", "amr", "defense")
PARENT_STAGE = {"amr": "adv", "defense": "adv"}


def default_output(cfg: dict[str, Any], stage: str) -> Path:
    return Path(cfg["checkpoint_dir"]) / f"{stage}.safetensors"


def run_stage(config: dict[str, Any], stage: str, *, parent: str | Path | None = None,
              out: str | Path | None = None, limit: int | None = None, data_root: str | None = None,
              device: str | torch.device | None = None, progress: bool = True, command: str = "",
              on_epoch: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None, defense: str | None = None,
              cafe: CafeMode | str | None = None, amr: str | Path | None = None,
              std_model: str | Path | None = None, runtime: Runtime | None = None) -> FitResult:
    """Train ``stage`` of ``config`` and write its checkpoint + card.

    Under torchrun (process group initialised by ``distributed.init``) every rank calls this;
    the config's batch size is the global batch and rank 0 writes the files.

    Args:
        parent: checkpoint the stage starts from (``amr``: the ADV backbone; default
            ``<checkpoint_dir>/adv.safetensors``).
        limit: train on the first N training images (default: the config's ``train_limit``).
        defense, cafe: for ``defense``: a ``DEFENSES`` name and a ``CafeMode`` (or its card
            encoding None / "cafe" / "control-h0"; the card records the latter).
        amr: AMR-GMM checkpoint whose h CAFE uses (default ``<checkpoint_dir>/amr.safetensors``).
        std_model: standard model for HELP (default ``<checkpoint_dir>/standard.safetensors``).
        runtime: AMP, channels_last, torch.compile, loader workers, backbone SyncBatchNorm.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    device = torch.device(device) if device is not None else pick_device()
    cfg = stage_config(config, stage)
    if stage == "defense":
        if not defense:
            raise ValueError("the defense stage needs --defense (adv, trades, mart, awp, help)")
        row = GridRow(defense, CafeMode.parse(cafe))
        cfg.update(defense=defense, cafe=row.mode.to_card())
        if row.mode.adds_term and "eps_inv" in config.get("analysis", {}):
            cfg.setdefault("eps_inv", float(config["analysis"]["eps_inv"]))  # the recipe's own choice first
    info = get_info(cfg["dataset"])
    limit = limit if limit is not None else cfg.get("train_limit")
    train_set = load_split(info.name, "train", data_root, cfg["n_val"], cfg["seed"], limit=limit)
    val_set = load_split(info.name, "val", data_root, cfg["n_val"], cfg["seed"])
    seed_everything(cfg["seed"])
    runtime = runtime or Runtime()
    precision = Precision(device, enabled=runtime.amp)
    card: dict[str, Any] = {"dataset": info.name, "backbone": cfg["backbone"], "stage": stage,
                            "parent": None, "config_name": config.get("name"), "config": cfg,
                            "eps": cfg["eps"], "n_train_images": len(train_set),
                            "n_val_images": len(val_set), "command": command}
    ranks = distributed.world()
    if ranks.size > 1:
        card["distributed"] = {"world_size": ranks.size, "batch_per_rank": cfg["batch_size"] // ranks.size,
                               "backbone_sync_bn": runtime.sync_bn}
    if stage in PARENT_STAGE:
        parent_path = Path(parent) if parent else default_output(cfg, PARENT_STAGE[stage])
        backbone, parent_card = load_backbone(parent_path, backbone=cfg["backbone"], device=device)
        if parent_card["dataset"] != info.name:
            raise CheckpointError(f"parent {parent_path.name} was trained on {parent_card['dataset']}, "
                                  f"config asks for {info.name}")
        card["parent"] = parent_record(parent_path, parent_card)
        if stage == "amr":
            from .amr_gmm import AMRStage

            runner = AMRStage(backbone, cfg, device, precision, runtime)
        else:
            runner = _defense_stage(cfg, backbone, card, train_set, device, precision, amr, std_model, runtime)
    else:
        from .classifier_stages import ClassifierStage

        model = create_model(cfg["backbone"], info.channels, info.num_classes, info.mean, info.std)
        runner = ClassifierStage(stage, model, cfg, len(train_set) // cfg["batch_size"], device, precision, runtime)
    default = default_output(cfg, row.label if stage == "defense" else stage)
    return fit(runner, train_set, val_set, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
               seed=cfg["seed"], out=Path(out) if out else default, card=card,
               device=device, progress=progress, on_epoch=on_epoch, should_stop=should_stop,
               channels_last=runtime.channels_last, workers=runtime.workers)


def _defense_stage(cfg: dict[str, Any], backbone: torch.nn.Module, card: dict[str, Any], train_set, device,
                   precision: Precision, amr: str | Path | None, std_model: str | Path | None,
                   runtime: Runtime):
    """The defense stage with its frozen helpers (h for CAFE, the standard model for HELP)."""
    from ..causal.analysis import default_eps_inv, load_amr
    from .defense_stage import DefenseStage

    folder = Path(cfg["checkpoint_dir"])
    causal_estimator = None
    mode = CafeMode.parse(cfg["cafe"])
    if mode.adds_term:
        amr_path = Path(amr) if amr else folder / "amr.safetensors"
        bundle = load_amr(amr_path, device)
        if bundle.card["parent"]["sha256"] != card["parent"]["sha256"]:
            raise CheckpointError(f"{amr_path.name} was trained on another backbone than {card['parent']['path']}")
        if "eps_inv" not in cfg:
            cfg["eps_inv"] = default_eps_inv(bundle.card)
        card["amr"] = parent_record(amr_path, bundle.card)
        causal_estimator = bundle.causal_estimator if mode is CafeMode.CAFE else None
    helper = None
    if cfg["defense"] == "help":
        std_path = Path(std_model) if std_model else folder / "standard.safetensors"
        helper, std_card = load_backbone(std_path, backbone=cfg["backbone"], device=device)
        card["std_model"] = parent_record(std_path, std_card)
    for p in backbone.parameters():
        p.requires_grad_(True)
    return DefenseStage(backbone, cfg, len(train_set) // cfg["batch_size"], device, precision,
                        causal_estimator=causal_estimator, std_model=helper, runtime=runtime)
