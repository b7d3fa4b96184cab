"""The pipeline: every stage in order, skips what matches the recipe, redoes only what changed."""
from __future__ import annotations

from pathlib import Path

import pytest

from cafe_core.io.config import load_config
from cafe_core.training.pipeline import pipeline_steps, run_pipeline, stale_reason

RECIPE = """
dataset = "fashion-mnist"
backbone = "lite"
eps = 0.1
seed = 0
n_val = 500
checkpoint_dir = "{folder}"

[stages.standard]
epochs = 1
train_limit = 256
batch_size = 64
lr = 0.05
attack = "none"

[stages.adv]
epochs = 1
train_limit = 256
batch_size = 64
lr = 0.05
attack = "fgsm_rs"
val_attack = "pgd"
val_steps = 2
val_adv_images = 50

[stages.amr]
epochs = 1
train_limit = 128
batch_size = 64
steps = 2
val_images = 50

[analysis]
eps_inv = 0.05

[stages.defense]
epochs = 1
train_limit = 128
batch_size = 64
lr = {lr}
steps = 1
inversion_steps = 1
val_attack = "pgd"
val_steps = 2
val_adv_images = 50
"""

ONLY = ["standard", "adv", "amr", "defense_adv", "defense_adv-cafe", "defense_help"]


def write_recipe(tmp_path: Path, lr: float = 0.001) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(RECIPE.format(folder=tmp_path / "ckpt", lr=lr))
    return path


def test_steps_cover_the_whole_recipe_in_order(tmp_path):
    config = load_config(write_recipe(tmp_path))
    names = [s.name for s in pipeline_steps(config)]
    assert names[:4] == ["standard", "adv", "amr", "defense_adv"]
    assert names[-2:] == ["analysis", "evaluation"]
    assert len([n for n in names if n.startswith("defense_")]) == 11
    assert "defense_adv-control-h0" in names and "defense_help-cafe" in names


@pytest.mark.slow
def test_pipeline_skips_what_is_done_and_retrains_only_what_changed(tmp_path, fashion):
    config = load_config(write_recipe(tmp_path))
    quiet = dict(progress=False, log=lambda _: None)
    first = run_pipeline(config, only=ONLY, **quiet)
    assert [(r["step"], r["action"]) for r in first] == [(s, "ran") for s in ONLY]
    second = run_pipeline(config, only=ONLY, **quiet)
    assert [r["action"] for r in second] == ["skipped"] * len(ONLY)
    # Deleting one defense checkpoint retrains that one only.
    (tmp_path / "ckpt" / "defense_adv.safetensors").unlink()
    third = run_pipeline(config, only=ONLY, **quiet)
    assert [r["step"] for r in third if r["action"] == "ran"] == ["defense_adv"]
    # A changed recipe value, or a retrained input, marks exactly the dependants as stale.
    changed = load_config(write_recipe(tmp_path, lr=0.002))
    reasons = {s.name: stale_reason(changed, s) for s in pipeline_steps(changed) if s.name in ONLY}
    assert reasons["standard"] is None and reasons["amr"] is None
    assert reasons["defense_adv"] == "recipe changed: lr"
    std = tmp_path / "ckpt" / "standard.safetensors"
    std.write_bytes(std.read_bytes())  # same bytes: still up to date
    assert stale_reason(config, next(s for s in pipeline_steps(config) if s.name == "defense_help")) is None


def test_dry_run_lists_every_step(tmp_path, capsys):
    from cafe_core.cli import main

    assert main(["pipeline", "--config", str(write_recipe(tmp_path)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "standard" in out and "no checkpoint" in out and "defense_help-cafe" in out


def test_unknown_names_run_nothing(tmp_path):
    config = load_config(write_recipe(tmp_path))
    records = run_pipeline(config, only=["nothing"], progress=False, log=lambda _: None)
    assert records == []
