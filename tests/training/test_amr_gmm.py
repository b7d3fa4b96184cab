"""AMR-GMM: the min-max touches only the player whose turn it is, with the method's losses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cafe_core.training.amr_gmm import AMRStage, moment_product
from cafe_core.causal.predictions import PREDICTIONS, causal_logits, causal_view
from cafe_core.models.estimator import create_estimator
from cafe_core.training.trainer import Precision
from tests.conftest import make_lite

CPU = torch.device("cpu")


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def stage():
    torch.manual_seed(0)
    return AMRStage(make_lite(seed=2), {"eps": 0.1, "steps": 2, "lr": 1e-3}, CPU, Precision(CPU))


@pytest.fixture()
def batch():
    torch.manual_seed(1)
    return torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))


@pytest.mark.parametrize("shape", [(2, 128, 7, 7), (2, 512, 4, 4), (2, 640, 8, 8), (2, 512, 2, 2)])
def test_estimator_keeps_the_feature_shape(shape):
    net = create_estimator(shape[1]).eval()
    assert net(torch.randn(shape)).shape == shape


def test_estimator_output_is_spatially_uniform_before_the_decoder():
    net = create_estimator(8).eval()
    z = torch.randn(1, 8, 9, 9)
    out = net(z)
    # Every position sees the same tiled vector: only a 3-pixel border (three 3x3
    # transposed convs with zero padding) differs.
    centre = out[..., 4, 4]
    torch.testing.assert_close(out[..., 3:6, 3:6], centre[..., None, None].expand(-1, -1, 3, 3))


def test_moment_is_the_product_of_cross_entropies_by_hand():
    torch.manual_seed(0)
    backbone = make_lite().eval()
    h = create_estimator(backbone.feature_channels).eval()
    natural = torch.randn(3, 128, 7, 7)
    shift = torch.randn(3, 128, 7, 7)
    labels = torch.tensor([0, 4, 9])
    with torch.no_grad():
        got = moment_product(backbone, h, natural, shift, labels)
        logits_hg = backbone.head(natural + h(shift))
        logits_g = backbone.head(natural + shift)
        by_hand = 0.0
        for i in range(3):
            ce1 = -torch.log_softmax(logits_hg[i], 0)[labels[i]]
            ce2 = -torch.log_softmax(logits_g[i], 0)[labels[i]]
            by_hand += float(ce1 * ce2) / 3
    assert got.item() == pytest.approx(by_hand, rel=1e-5)


def test_max_step_changes_only_g_and_min_step_only_h(stage, batch):
    images, labels = batch
    backbone_before = params(stage.backbone)
    adversarial = stage.attack(images, labels)
    with torch.no_grad():
        natural = stage.backbone.features(images)
        variation = stage.backbone.features(adversarial) - natural
    h0, g0 = params(stage.h), params(stage.g)
    stage.h.train(), stage.g.train()
    stage.max_step(natural, variation, labels)
    h1, g1 = params(stage.h), params(stage.g)
    assert same(h0, h1), "max step must not change h"
    assert not same(g0, g1), "max step must change g"
    stage.min_step(natural, variation, labels)
    h2, g2 = params(stage.h), params(stage.g)
    assert same(g1, g2), "min step must not change g"
    assert not same(h1, h2), "min step must change h"
    assert same(backbone_before, params(stage.backbone)), "the backbone never changes"
    assert not stage.backbone.training
    assert all(p.grad is None for p in stage.backbone.parameters())


def test_max_step_loss_is_the_method_formula(stage, batch):
    images, labels = batch
    with torch.no_grad():
        natural = stage.backbone.features(images)
        variation = stage.backbone.features(images.flip(0)) - natural
    stage.g.eval(), stage.h.eval()  # fixed BN statistics so the two evaluations agree
    with torch.no_grad():
        shift = stage.g(variation)
        expected = (-(F.cross_entropy(stage.backbone.head(natural + stage.h(shift)), labels, reduction="none")
                      * F.cross_entropy(stage.backbone.head(natural + shift), labels, reduction="none")).mean()
                    + stage.lam * (shift - variation).pow(2).mean())
    got = stage.max_step(natural, variation, labels)
    assert got == pytest.approx(expected.item(), rel=1e-5)


def test_a_training_batch_reports_both_losses_and_validation_all_accuracies(stage, batch, fashion):
    logs = stage.train_batch(*batch)
    assert set(logs) == {"loss_g", "loss_h"}
    assert logs["loss_h"] >= 0  # product of two cross-entropies
    metrics = stage.validate(fashion[1].subset(torch.arange(32)))
    assert set(metrics) == {f"{n}_acc" for n in PREDICTIONS} | {"recon_hz"}
    assert all(0 <= metrics[f"{n}_acc"] <= 1 for n in PREDICTIONS)
    assert stage.h.training and stage.g.training, "validation restores train mode"


def test_causal_view_matches_its_definitions(stage, batch):
    images, labels = batch
    stage.h.eval(), stage.g.eval()
    adversarial = stage.attack(images, labels)
    view = causal_view(stage.backbone, stage.h, stage.g, images, adversarial)
    with torch.no_grad():
        torch.testing.assert_close(view.logits["natural"], stage.backbone(images))
        torch.testing.assert_close(view.logits["adversarial"], stage.backbone(adversarial), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(view.logits["causal"], causal_logits(stage.backbone, stage.h, images, adversarial))
        torch.testing.assert_close(causal_logits(stage.backbone, None, images, adversarial), view.logits["natural"])
