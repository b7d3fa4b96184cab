"""Every shipped recipe is complete and its backbone runs on its dataset's images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cafe_core.io.config import load_config, stage_config
from cafe_core.data.datasets import get_info
from cafe_core.models import create_model
from cafe_core.training.pipeline import pipeline_steps

RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def test_the_paper_recipes_and_the_default_are_all_there():
    paper = {f"{d}_{b}" for d in ("cifar10", "svhn", "tiny") for b in ("resnet18", "vgg16", "wrn34_10")}
    assert paper | {"fashion_lite", "fashion_resnet18"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_has_every_stage_and_its_backbone_classifies_its_images(name):
    config = load_config(name)
    assert 0 < config["eps"] <= 0.1 and config["checkpoint_dir"].endswith(name)
    steps = pipeline_steps(config)
    assert [s.name for s in steps][:3] == ["standard", "adv", "amr"] and steps[-1].name == "evaluation"
    defense = stage_config(config, "defense")
    eps_inv = defense.get("eps_inv", config.get("analysis", {}).get("eps_inv"))  # as the defense stage reads it
    assert 0 < eps_inv < config["eps"] and defense["epochs"] >= 1
    info = get_info(config["dataset"])
    model = create_model(config["backbone"], in_channels=info.channels, num_classes=info.num_classes).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, info.channels, info.image_size, info.image_size))
    assert logits.shape == (2, info.num_classes) and torch.isfinite(logits).all()
