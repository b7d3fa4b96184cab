"""Every registered backbone: f/c split composes to forward, split shapes as in method.md."""
from __future__ import annotations

import pytest
import torch

from cafe_core.models import MODELS, create_model

# (backbone, input size) -> feature shape, from method.md section 1 (and "lite": after stage 3).
SPLITS = {
    ("vgg16", 32): (512, 2, 2),
    ("resnet18", 32): (512, 4, 4),
    ("wrn34_10", 32): (640, 8, 8),
    ("lite", 32): (128, 8, 8),
    ("lite", 28): (128, 7, 7),
    ("resnet18", 64): (512, 8, 8),  # Tiny-ImageNet doubles every spatial size
}


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_head_of_features_is_forward(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, num_classes=7).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        feature = model.features(x)
        composed = model.head(feature)
        direct = model(x)
    assert feature.shape[1] == model.feature_channels
    assert composed.shape == (2, 7)
    torch.testing.assert_close(composed, direct, rtol=0, atol=0)


@pytest.mark.parametrize("name,size", sorted(SPLITS))
def test_split_shapes_match_the_method(name, size):
    model = create_model(name, in_channels=3, num_classes=10).eval()
    with torch.no_grad():
        feature = model.features(torch.rand(1, 3, size, size))
    assert tuple(feature.shape[1:]) == SPLITS[(name, size)]


def test_vgg_feature_is_taken_before_relu():
    model = create_model("vgg16").eval()
    with torch.no_grad():
        feature = model.features(torch.rand(4, 3, 32, 32))
    assert (feature < 0).any(), "conv5_3 BN output must be split before its ReLU"


def test_normalisation_lives_inside_the_model():
    model = create_model("lite", in_channels=1, mean=[0.25], std=[0.5]).eval()
    x = torch.full((1, 1, 28, 28), 0.75)
    torch.testing.assert_close(model.normalize(x), torch.ones_like(x))
    assert "normalize.mean" in model.state_dict()


def test_unknown_backbone_and_bad_normalisation_are_clear():
    with pytest.raises(KeyError, match="known: lite, resnet18, vgg16, wrn34_10"):
        create_model("resnet50")
    with pytest.raises(ValueError, match="mean/std need 3 values"):
        create_model("lite", in_channels=3, mean=[0.5], std=[0.5])


def test_lite_size_matches_the_cpu_budget():
    params = sum(p.numel() for p in create_model("lite", in_channels=1).parameters())
    assert 250_000 < params < 350_000
