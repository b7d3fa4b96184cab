"""Feature inversion for Fig. 3 pictures (cafe_core/causal/feature_inversion.py): tiny seeded lite models."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from cafe_core.causal.predictions import causal_view
from cafe_core.causal.feature_inversion import (FeatureInversion, feature_inversion, fig3_grid, fig3_targets, make_start,
                               relative_distance, total_variation)
from cafe_core.models import create_model
from cafe_core.models.estimator import create_estimator

KEYS = ("natural", "adversarial", "causal", "counterfactual")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # 28x28 inputs on a tiny model run fastest single-threaded, and two threads fight a busy CPU.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("lite", in_channels=1, num_classes=10).eval()


@pytest.fixture(scope="module")
def setup():
    """(backbone, h, g, x, x_adv, view) for 2 random 28x28 images."""
    model = make_model()
    torch.manual_seed(1)
    h = create_estimator(model.feature_channels).eval()
    g = create_estimator(model.feature_channels).eval()
    x = torch.rand(2, 1, 28, 28)
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    return model, h, g, x, x_adv, causal_view(model, h, g, x, x_adv)


@pytest.fixture(scope="module")
def inverted(setup):
    model, *_, x, _, view = setup
    start = make_start(x.shape, seed=0)
    return start, feature_inversion(model, fig3_targets(view), start, steps=30)


def test_fig3_targets_are_the_four_features(setup):
    model, h, g, x, x_adv, view = setup
    targets = fig3_targets(view)
    assert tuple(targets) == KEYS
    with torch.no_grad():
        natural = model.features(x)
        z = model.features(x_adv) - natural
        expected = [natural, natural + z, natural + h(z), natural + g(z)]
    for key, want in zip(KEYS, expected):
        torch.testing.assert_close(targets[key], want)
    assert not torch.equal(targets["causal"], targets["counterfactual"])


def test_inversion_lowers_feature_distance_for_every_target(inverted):
    _, result = inverted
    for key in KEYS:
        assert (result.final_distance[key] < 0.7 * result.initial_distance[key]).all(), key


def test_outputs_in_range_with_start_shape(inverted):
    start, result = inverted
    assert isinstance(result, FeatureInversion)
    for key in KEYS:
        image = result.images[key]
        assert image.shape == start.shape and not image.requires_grad
        assert image.min() >= 0 and image.max() <= 1
        assert not torch.equal(image, start)
        assert result.labels[key].shape == result.final_distance[key].shape == (2,)


def test_labels_are_predictions_of_the_target_feature(setup, inverted):
    model, *_, view = setup
    _, result = inverted
    with torch.no_grad():
        for key, target in fig3_targets(view).items():
            assert torch.equal(result.labels[key], model.head(target).argmax(1))
        # An untrained head predicts one class everywhere, so also push targets towards the
        # classifier rows of classes 2 and 5: their labels must differ from the start's.
        rows = model.classifier.fc.weight
        targets = {f"class{k}": view.natural_feature + 20 * rows[k][None, :, None, None] for k in (2, 5)}
        wanted = {key: model.head(t).argmax(1) for key, t in targets.items()}
        assert not torch.equal(wanted["class2"], wanted["class5"])
        labels = feature_inversion(model, targets, make_start((2, 1, 28, 28)), steps=0).labels
    for key in targets:
        assert torch.equal(labels[key], wanted[key])


def test_each_picture_matches_its_own_target():
    model = make_model()
    vertical = torch.zeros(2, 1, 28, 28)
    vertical[:, :, 6:22, 10:18] = 1
    horizontal = vertical.transpose(2, 3).clone()
    with torch.no_grad():
        targets = {"vertical": model.features(vertical), "horizontal": model.features(horizontal)}
    result = feature_inversion(model, targets, make_start(vertical.shape), steps=30)
    with torch.no_grad():
        for key, other in (("vertical", "horizontal"), ("horizontal", "vertical")):
            feature = model.features(result.images[key])
            assert (relative_distance(feature, targets[key]) < relative_distance(feature, targets[other])).all()


def test_all_targets_share_the_start(setup):
    model, *_, x, _, view = setup
    start = make_start(x.shape, seed=3)
    result = feature_inversion(model, fig3_targets(view), start, steps=0)
    for key in KEYS:
        assert torch.equal(result.images[key], start)
        torch.testing.assert_close(result.initial_distance[key], result.final_distance[key])


def test_backbone_untouched_and_modes_restored(setup):
    *_, x, _, view = setup
    model = make_model()
    model.train()
    model.classifier.eval()  # a mixed mode must come back as it was, not flattened to train
    modes = {name: m.training for name, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats included
    feature_inversion(model, fig3_targets(view), make_start(x.shape), steps=3)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_same_seed_same_images(setup):
    model, *_, x, _, view = setup
    targets = {"adversarial": fig3_targets(view)["adversarial"]}
    start = make_start(x.shape)
    runs = [feature_inversion(model, targets, start, steps=5, seed=s).images["adversarial"] for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])  # the seed drives the jitter shifts
    torch.testing.assert_close(make_start(x.shape, seed=5), make_start(x.shape, seed=5))


def test_tv_prior_smooths_the_picture(setup):
    model, *_, x, _, view = setup
    targets = {"natural": fig3_targets(view)["natural"][:1]}
    start = make_start((1, 1, 28, 28))
    rough = feature_inversion(model, targets, start, steps=25, tv_weight=0.0).images["natural"]
    smooth = feature_inversion(model, targets, start, steps=25, tv_weight=5.0).images["natural"]
    assert total_variation(smooth).item() < 0.7 * total_variation(rough).item()


def test_invalid_inputs_raise(setup):
    model, *_, x, _, view = setup
    targets = fig3_targets(view)
    with pytest.raises(ValueError):
        feature_inversion(model, targets, make_start((3, 1, 28, 28)), steps=1)  # batch mismatch
    with pytest.raises(ValueError):
        feature_inversion(model, targets, x * 2, steps=1)  # outside [0, 1]
    with pytest.raises(ValueError):
        feature_inversion(model, {}, x, steps=1)


def test_fig3_grid_writes_png(setup, inverted, tmp_path):
    *_, x, _, _ = setup
    _, result = inverted
    names = [f"class {i}" for i in range(10)]
    true = result.labels["natural"].clone()
    true[1] = (true[1] + 1) % 10  # one row with a mismatching (red) natural label
    out = fig3_grid(x, result, true, names, tmp_path / "fig3.png", title="test")
    assert out == tmp_path / "fig3.png"
    assert [p.name for p in tmp_path.iterdir()] == ["fig3.png"]  # no temp file left behind
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 2000 and 200 <= height <= 2000 and width > height


def test_coarse_parameterisation_stays_in_range_and_reaches_the_target(setup):
    from cafe_core.causal.feature_inversion import APP_INVERSION, InversionSetting, feature_inversion

    backbone, x = setup[0], setup[3]
    with torch.no_grad():
        target = {"natural": backbone.features(x)}
    start = make_start(tuple(x.shape), seed=0)
    still = feature_inversion(backbone, target, start, steps=0, resolution=14)
    coarse = torch.nn.functional.interpolate(torch.nn.functional.adaptive_avg_pool2d(start, 14), size=28,
                                             mode="bilinear", align_corners=False)
    assert torch.allclose(still.images["natural"], coarse, atol=1e-6), "steps=0: the upsampled coarse start"
    out = APP_INVERSION.invert(backbone, target, x.shape, seed=0)
    picture = out.images["natural"]
    assert picture.shape == x.shape and picture.min() >= 0 and picture.max() <= 1
    assert (out.final_distance["natural"] < out.initial_distance["natural"]).all()
    again = InversionSetting(**{**APP_INVERSION.__dict__}).invert(backbone, target, x.shape, seed=0)
    assert torch.equal(again.images["natural"], picture)
    with pytest.raises(ValueError, match="resolution"):
        feature_inversion(backbone, target, start, resolution=0)
