"""Attacks: stay in the eps ball and [0,1], restore the model's mode, and really attack."""
from __future__ import annotations

import pytest
import torch

from cafe_core.attacks.registry import ATTACKS, CWInf, build_attack
from cafe_core.evaluation.evaluate import accuracy
from tests.conftest import make_lite

EPS = 0.1
CHEAP_STEPS = {"pgd": 5, "cw": 5, "apgd_ce": 5, "apgd_dlr": 5, "autoattack": 3}


@pytest.fixture(scope="module")
def batch(fashion):
    train, _, _ = fashion
    return train[list(range(12))]


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_attack_respects_budget_and_mode(name, mode, toy_model, batch):
    images, labels = batch
    model = toy_model
    model.train(mode == "train")
    torch.manual_seed(0)
    attack = build_attack(name, model, EPS, CHEAP_STEPS.get(name), seed=0)
    adv = attack(images, labels)
    try:
        assert model.training == (mode == "train"), "attack must restore the model's mode"
        assert adv.shape == images.shape
        assert (adv - images).abs().max() <= EPS + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert not torch.equal(adv, images), f"{name} changed nothing"
    finally:
        model.eval()


def test_robust_accuracy_is_below_clean_on_a_trained_model(toy_model, fashion):
    test = fashion[2].subset(torch.arange(256))
    clean = accuracy(toy_model, test)
    torch.manual_seed(0)
    robust = accuracy(toy_model, test, build_attack("pgd", toy_model, EPS, steps=10))
    fgsm = accuracy(toy_model, test, build_attack("fgsm", toy_model, EPS))
    assert clean > 0.5, "toy model should have learned something"
    assert robust <= fgsm <= clean
    assert robust < clean - 0.3, "a non-robust model should fall under PGD at eps 0.1"
    cw = accuracy(toy_model, test, build_attack("cw", toy_model, EPS, steps=10))
    assert cw < clean - 0.3, "CW-inf must move correctly classified images too"


def test_cw_margin_is_the_carlini_wagner_margin():
    attack = CWInf(make_lite(), eps=0.1, steps=1)
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    labels = torch.tensor([1, 0])
    # max wrong - true = [2 - 5, 3 - 0], capped above at kappa
    torch.testing.assert_close(attack.margin(logits, labels), torch.tensor([-3.0, 0.0]))
    attack.kappa = 1.0
    torch.testing.assert_close(attack.margin(logits, labels), torch.tensor([-3.0, 1.0]))


def test_bad_arguments_are_refused(toy_model):
    with pytest.raises(ValueError, match="eps must be in"):
        build_attack("pgd", toy_model, 1.5)
    with pytest.raises(ValueError, match="eps must be in"):
        build_attack("pgd", toy_model, float("nan"))
    with pytest.raises(ValueError, match="steps must be"):
        build_attack("pgd", toy_model, 0.1, steps=0)
    with pytest.raises(KeyError, match="unknown attack 'deepfool'"):
        build_attack("deepfool", toy_model, 0.1)
