"""Loading an AMR-GMM checkpoint with its parent, and the analysis' controls."""
from __future__ import annotations

import pytest
import torch

from cafe_core.causal.analysis import causal_analysis, load_amr
from cafe_core.io.checkpoints import CheckpointError, save_checkpoint
from tests.conftest import CARD, make_lite

def test_load_amr_returns_frozen_eval_modules(amr_files):
    bundle = load_amr(amr_files[1])
    assert not bundle.backbone.training and not bundle.causal_estimator.training
    assert all(not p.requires_grad for p in bundle.backbone.parameters())
    assert bundle.backbone_card["stage"] == "adv"


def test_amr_refuses_a_backbone_it_was_not_trained_on(amr_files):
    adv, amr = amr_files
    save_checkpoint(adv, {"model": make_lite(seed=9)}, dict(CARD, stage="adv", parent=None))
    with pytest.raises(CheckpointError, match="not the backbone amr.safetensors was trained on"):
        load_amr(amr)


def test_a_backbone_checkpoint_is_not_an_amr_checkpoint(amr_files):
    with pytest.raises(CheckpointError, match="stage='adv' but 'amr' was requested"):
        load_amr(amr_files[0])


def test_parent_found_beside_the_checkpoint_when_the_folder_moved(amr_files, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    moved.mkdir()
    for path in amr_files:
        for suffix in (".safetensors", ".json"):
            shutil.move(path.with_suffix(suffix), moved / path.with_suffix(suffix).name)
    assert load_amr(moved / "amr.safetensors").card["stage"] == "amr"


def test_controls_and_norm_ratios_are_consistent(amr_files, fashion):
    bundle = load_amr(amr_files[1])
    result = causal_analysis(bundle, fashion[2].subset(torch.arange(40)), steps=3, eps_inv=0.05,
                             batch_size=20, progress=False)
    acc = result["accuracy"]
    assert result["controls"]["h_zero"]["accuracy"]["causal"] == acc["natural"]
    assert acc["adversarial"] <= acc["natural"]
    assert result["controls"]["h_zero"]["kl_x1000"]["clean"] == 0
    assert result["norm_ratio"]["h_z_over_z"] > 0 and result["n_images"] == 40
    assert all(v >= 0 for v in result["kl_x1000"].values())
