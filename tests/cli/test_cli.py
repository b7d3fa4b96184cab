"""The command line end to end on tiny budgets: train adv -> evaluate -> train amr -> analyze."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cafe_core.cli import main

# Validation on 500 held-out images instead of the recipe's 5,000: what these tests check does not
# depend on the split's size, and clean validation of 5,000 images is most of a 1-epoch stage's time.
SMALL_VAL = ["--set", "n_val=500"]


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "cafe_core", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "evaluate", "analyze", "export-examples"):
        assert command in out.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion):
    folder = tmp_path_factory.mktemp("cli")
    adv = folder / "adv.safetensors"
    assert main(["train", "--stage", "adv", "--limit", "256", "--quiet", "--out", str(adv),
                 "--set", "stages.adv.epochs=1", "--set", "stages.adv.val_adv_images=50", *SMALL_VAL]) == 0
    amr = folder / "amr.safetensors"
    assert main(["train", "--stage", "amr", "--parent", str(adv), "--limit", "128", "--quiet", "--out", str(amr),
                 "--set", "stages.amr.epochs=1", "--set", "stages.amr.val_images=50",
                 "--set", "stages.amr.steps=2", *SMALL_VAL]) == 0
    return folder


def test_train_writes_a_complete_card(trained):
    card = json.loads((trained / "adv.json").read_text())
    assert card["stage"] == "adv" and card["backbone"] == "lite" and card["complete"]
    assert card["n_train_images"] == 256 and card["config"]["epochs"] == 1
    amr = json.loads((trained / "amr.json").read_text())
    assert amr["parent"]["sha256"] == card["sha256"] and amr["modules"] == ["h", "g"]
    assert {"val_causal_acc", "val_counterfactual_acc", "train_loss_g", "train_loss_h", "val_recon_hz"} <= set(amr["metrics"])


def test_evaluate_prints_and_writes_json(trained, capsys):
    out = trained / "eval.json"
    assert main(["evaluate", "--checkpoint", str(trained / "adv.safetensors"), "--attacks", "clean,fgsm,pgd",
                 "--steps", "pgd=3", "--n", "100", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    acc = report["accuracy"]
    assert report["n_images"] == {"clean": 100, "fgsm": 100, "pgd": 100}
    assert 0 <= acc["pgd"] <= acc["clean"] <= 1
    assert "| pgd-3 |" in capsys.readouterr().out
    assert not out.with_suffix(".state.json").exists()


def test_analyze_writes_the_causal_json_and_figure(trained):
    out = trained / "causal_test.json"
    assert main(["analyze", "--amr", str(trained / "amr.safetensors"), "--n", "40", "--steps", "2",
                 "--eps-inv", "0.05", "--figure-n", "2", "--quiet", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["accuracy"]) >= {"natural", "adversarial", "causal", "counterfactual", "causal_of_counterfactual"}
    assert set(result["kl_x1000"]) == {"inversion", "clean", "adversarial"}
    assert result["n_images"] == 40 and result["attack"]["name"] == "pgd"
    assert result["controls"]["h_zero"]["accuracy"]["causal"] == result["accuracy"]["natural"]
    assert result["controls"]["h_zero"]["kl_x1000"]["clean"] == 0
    assert (trained / "causal_test_fig3.png").stat().st_size > 1000


@pytest.mark.parametrize("defense,flag", [("trades", "--cafe"), ("help", "--control-h0")])
def test_defense_stage_from_the_cli(trained, defense, flag):
    out = trained / f"{defense}.safetensors"
    assert main(["train", "--stage", "defense", "--defense", defense, flag, "--limit", "64", "--quiet",
                 "--parent", str(trained / "adv.safetensors"), "--amr", str(trained / "amr.safetensors"),
                 "--std-model", str(trained / "adv.safetensors"), "--out", str(out),
                 "--set", "stages.defense.epochs=1", "--set", "stages.defense.val_adv_images=32",
                 "--set", "stages.defense.steps=2", *SMALL_VAL]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["config"]["defense"] == defense and card["config"]["cafe"] == flag.lstrip("-")
    assert card["parent"]["stage"] == "adv" and card["amr"]["stage"] == "amr"
    assert card["config"]["eps_inv"] == 0.05  # from configs/fashion_lite.toml [analysis]
    assert ("std_model" in card) == (defense == "help")


def test_defense_stage_refuses_bad_combinations(trained):
    with pytest.raises(SystemExit, match="not both"):
        main(["train", "--stage", "defense", "--defense", "adv", "--cafe", "--control-h0"])
    with pytest.raises(ValueError, match="needs --defense"):
        main(["train", "--stage", "defense", "--parent", str(trained / "adv.safetensors"), "--limit", "64"])
