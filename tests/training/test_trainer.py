"""The trainer: loss goes down, best epoch kept, interrupted runs resume to the same result."""
from __future__ import annotations

import pytest
import torch

from cafe_core.io.checkpoints import load_backbone
from cafe_core.training.classifier_stages import ClassifierStage
from cafe_core.training.trainer import Precision, fit, one_cycle, resume_path
from tests.conftest import make_lite

CPU = torch.device("cpu")


def adv_cfg(epochs=2):
    return {"lr": 0.05, "epochs": epochs, "warmup": 0.3, "attack": "fgsm_rs", "eps": 0.1,
            "val_attack": "pgd", "val_steps": 2, "val_adv_images": 64, "seed": 0}


def run(tmp_path, data, name="adv", should_stop=None, epochs=2, cfg=None):
    train, val = data
    cfg = cfg or adv_cfg(epochs)
    stage = ClassifierStage("adv", make_lite(seed=1), cfg, len(train) // 64, CPU, Precision(CPU))
    result = fit(stage, train, val, epochs=cfg["epochs"], batch_size=64, seed=0,
                 out=tmp_path / f"{name}.safetensors", card={"config": cfg, "dataset": "fashion-mnist",
                                                             "backbone": "lite", "eps": 0.1},
                 device=CPU, progress=False, should_stop=should_stop)
    return stage, result


@pytest.fixture(scope="module")
def small(fashion):
    train, val, _ = fashion
    return train.subset(torch.arange(256)), val.subset(torch.arange(128))


def test_one_cycle_rises_then_falls_to_zero():
    f = one_cycle(100, 0.25)
    values = [f(s) for s in range(101)]
    assert values[0] == 0 and values[25] == 1 and values[100] == 0
    assert all(a <= b for a, b in zip(values[:25], values[1:26]))
    assert all(a >= b for a, b in zip(values[25:], values[26:]))


def test_cpu_precision_is_plain_fp32():
    p = Precision(CPU)
    assert not p.enabled and not p.scaler.is_enabled()


def test_short_training_lowers_the_loss(tmp_path, fashion):
    train, val, _ = fashion
    cfg = {"lr": 0.05, "epochs": 3, "warmup": 0.2, "attack": "none", "seed": 0}
    _, result = run(tmp_path, (train.subset(torch.arange(1024)), val.subset(torch.arange(256))),
                    "standard", cfg=cfg)
    losses = [e["train_loss"] for e in result.history]
    assert losses[-1] < losses[0] - 0.3
    assert result.history[-1]["val_clean_acc"] > 0.5
    assert result.card["complete"] and result.card["metrics"]["epoch"] == result.card["epoch_selected"]


def test_best_epoch_is_the_one_saved(tmp_path, small):
    stage, result = run(tmp_path, small, epochs=3)
    best = max(result.history, key=lambda e: e["val_robust_acc"])
    assert result.card["epoch_selected"] == best["epoch"]
    model, card = load_backbone(tmp_path / "adv.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, stage.model.state_dict()[key])
    assert not resume_path(tmp_path / "adv.safetensors").exists(), "resume file is removed when done"


def test_interrupted_run_resumes_to_the_same_result(tmp_path, small):
    _, straight = run(tmp_path / "a", small)

    calls = {"n": 0}

    def stop_in_second_epoch():
        calls["n"] += 1
        return calls["n"] > 6  # 4 batches per epoch: stops after 2 batches of epoch 2

    _, broken = run(tmp_path / "b", small, should_stop=stop_in_second_epoch)
    weights = tmp_path / "b" / "adv.safetensors"
    assert not weights.exists(), "no checkpoint is written for an unfinished run"
    assert resume_path(weights).exists()
    assert len(broken.history) == 1
    _, resumed = run(tmp_path / "b", small)
    assert resumed.resumed_from_epoch == 1
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    a, _ = load_backbone(tmp_path / "a" / "adv.safetensors")
    b, _ = load_backbone(weights)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0)


def test_resume_file_of_another_config_is_ignored(tmp_path, small):
    calls = {"n": 0}

    def stop_early():
        calls["n"] += 1
        return calls["n"] > 5  # in epoch 2

    run(tmp_path, small, should_stop=stop_early)
    other = adv_cfg()
    other["lr"] = 0.02
    _, result = run(tmp_path, small, cfg=other)
    assert result.resumed_from_epoch == 0
