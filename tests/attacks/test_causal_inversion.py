"""Causal inversion stays in its eps ball and [0,1] and lowers the KL to its target."""
from __future__ import annotations

import torch

from cafe_core.attacks.causal_inversion import CausalInversion, prediction_kl
from tests.conftest import make_lite


def test_prediction_kl_by_hand():
    p = torch.tensor([[2.0, 0.0]])
    q = torch.tensor([[0.0, 0.0]])
    sp = torch.softmax(p, 1)[0]
    expected = float((sp * (sp.log() - torch.log(torch.tensor([0.5, 0.5])))).sum())
    assert abs(prediction_kl(p, q).item() - expected) < 1e-6
    assert prediction_kl(q, q).item() == 0


def test_inversion_respects_budget_lowers_kl_and_restores_mode(toy_model, fashion):
    images, _ = fashion[2][list(range(32))]
    torch.manual_seed(0)
    with torch.no_grad():
        target = toy_model(images.flip(0))  # another image's prediction: far from the clean one
        before = prediction_kl(toy_model(images), target).mean()
    toy_model.train()
    eps = 0.1
    inverted = CausalInversion(toy_model, eps, steps=10)(images, target)
    assert toy_model.training, "mode restored"
    toy_model.eval()
    assert (inverted - images).abs().max() <= eps + 1e-6
    assert inverted.min() >= 0 and inverted.max() <= 1
    with torch.no_grad():
        after = prediction_kl(toy_model(inverted), target).mean()
    assert after < 0.7 * before, f"KL {before:.3f} -> {after:.3f}"


def test_zero_budget_changes_nothing():
    model = make_lite().eval()
    x = torch.rand(2, 1, 28, 28)
    out = CausalInversion(model, 0.0, steps=3)(x, model(x))
    assert torch.equal(out, x)
