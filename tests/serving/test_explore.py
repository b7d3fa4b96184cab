"""The Explore computation for one image: consistent with the library's own pieces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cafe_core.causal.analysis import load_amr
from cafe_core.causal.predictions import PREDICTIONS, causal_view
from cafe_core.serving.explore import explore


@pytest.fixture()
def setup(amr_files, fashion):
    bundle = load_amr(amr_files[1])
    image, label = fashion[2][0]
    return bundle, image[None], int(label), fashion[2].class_names


def test_explore_returns_every_panel_and_consistent_numbers(setup):
    bundle, image, label, names = setup
    result = explore(bundle, image, label, names, attack="pgd", eps=0.1, steps=5, seed=3,
                     eps_inv=0.05, feature_steps=10)
    for key in ("clean", "adversarial", "perturbation", "inverted", "feature_natural", "feature_adversarial",
                "feature_causal", "feature_counterfactual"):
        assert result.images[key].shape == (28, 28, 3) and result.images[key].dtype == np.uint8
    assert 0 < result.linf <= 0.1 + 1e-6
    assert set(result.predictions) == set(PREDICTIONS) | {"inverted"}
    for view in result.predictions.values():
        assert sum(view.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert view.correct == (view.label == label)
        assert view.class_name == names[view.label]
    assert set(result.kl_x1000) == {"inversion", "clean", "adversarial"}
    assert len(result.channels["index"]) == 12 == len(result.channels["h_z"])
    assert result.to_json()["settings"]["seed"] == 3


def test_explore_matches_the_library_for_the_same_seed(setup):
    bundle, image, label, names = setup
    result = explore(bundle, image, label, names, attack="pgd", eps=0.1, steps=5, seed=7, eps_inv=0.05, feature_steps=2)
    from cafe_core.attacks.registry import build_attack

    attacker = build_attack("pgd", bundle.backbone, 0.1, 5, 7)
    torch.manual_seed(7)
    adversarial = attacker(image, torch.tensor([label]))
    view = causal_view(bundle.backbone, bundle.causal_estimator, bundle.counterfactual_generator, image, adversarial)
    for name in PREDICTIONS:
        probs = torch.softmax(view.logits[name], 1)[0]
        assert result.predictions[name].label == int(probs.argmax())
        assert result.predictions[name].confidence == pytest.approx(float(probs.max()), abs=1e-5)


def test_targeted_attack_and_bad_settings(setup):
    bundle, image, label, names = setup
    target = (label + 3) % 10
    result = explore(bundle, image, label, names, attack="pgd", eps=0.3, steps=20, target=target,
                     eps_inv=0.05, feature_steps=2)
    assert result.settings["target"] == target
    assert result.predictions["adversarial"].label == target
    with pytest.raises(ValueError, match="no targeted mode"):
        explore(bundle, image, label, names, attack="apgd_ce", target=1, feature_steps=2)
    with pytest.raises(ValueError, match="target class must be in"):
        explore(bundle, image, label, names, target=12, eps_inv=0.05, feature_steps=2)
    with pytest.raises(ValueError, match="eps must be in"):
        explore(bundle, image, label, names, eps=2.0, eps_inv=0.05, feature_steps=2)
