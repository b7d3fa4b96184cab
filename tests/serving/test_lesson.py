"""Every sentence of the lesson and of the Explore headline follows the outcome: one test per branch."""
from __future__ import annotations

import pytest

from cafe_core.serving.explore import ExploreResult, PredictionView
from cafe_core.serving.lesson import LESSON_TITLES, lesson_step
from cafe_core.serving.texts import explore_headline

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def result(natural=4, adversarial=6, causal=4, counterfactual=2, truth=4, network="adv", causal_panels=True):
    """An ExploreResult whose predictions are the given classes (the true class ``truth``, or None)."""
    def view(label):
        return PredictionView(label, NAMES[label], 0.9, None if truth is None else label == truth, [0.0] * 10)

    predictions = {"natural": view(natural), "adversarial": view(adversarial)}
    kl = {}
    if causal_panels:
        predictions.update(causal=view(causal), counterfactual=view(counterfactual), inverted=view(causal),
                           causal_of_counterfactual=view(causal))
        kl = {"inversion": 1.0, "clean": 2.0, "adversarial": 50.0}
    settings = {"attack": "pgd", "eps": 26 / 255, "steps": 10, "seed": 0, "true_label": truth, "network": network}
    return ExploreResult({}, 4.9, 26 / 255, predictions, {}, kl, NAMES, settings)


def rows(undefended_correct=False, base_right=1, cafe_right=2):
    out = [{"defense": "none", "cafe": False, "adversarial_label": 4 if undefended_correct else 6,
            "adversarial_correct": undefended_correct}]
    for i in range(5):
        out.append({"defense": "adv", "cafe": False, "adversarial_correct": i < base_right, "adversarial_label": 4})
        out.append({"defense": "adv", "cafe": True, "adversarial_correct": i < cafe_right, "adversarial_label": 4})
    return out


def test_five_titled_steps():
    assert len(LESSON_TITLES) == 5
    with pytest.raises(ValueError):
        lesson_step(5, result())


def test_clean_step_right_wrong_and_unknown():
    assert "reads it as **Coat** (90%) ✓" in lesson_step(0, result())
    assert "already wrong before any attack" in lesson_step(0, result(natural=2, adversarial=2))
    assert "unknown class" in lesson_step(0, result(truth=None))


def test_attack_step_when_it_fools_and_when_it_fails():
    fooled = lesson_step(1, result(), rows())
    assert "now says **Shirt** (90%) ✗" in fooled and "fooled it" in fooled
    assert "undefended network" in fooled and "**Shirt** ✗" in fooled
    failed = lesson_step(1, result(adversarial=4), rows())
    assert "this time the attack failed" in failed and "attack the undefended network instead, or raise eps" in failed
    failed_standard = lesson_step(1, result(adversarial=4, network="standard"))
    assert "raise eps or the number of steps" in failed_standard and "instead" not in failed_standard


def test_causal_step_right_wrong_and_agreeing():
    assert "kept the true class although the attack changed" in lesson_step(2, result())
    assert "h did not recover the true class" in lesson_step(2, result(causal=6))
    assert "agrees with the true class" in lesson_step(2, result(adversarial=4))
    assert "cannot say whether it is right" in lesson_step(2, result(truth=None))


def test_counterfactual_step_wrong_and_right():
    assert "points to the wrong class" in lesson_step(3, result())
    assert "even the counterfactual keeps the true class" in lesson_step(3, result(counterfactual=4))


def test_steps_that_need_h_and_g_say_so_without_them():
    for step in (2, 3):
        text = lesson_step(step, result(network="standard", causal_panels=False))
        assert "No causal estimator" in text and "undefended network" in text


def test_defense_step_counts_rows_and_quotes_the_grid():
    text = lesson_step(4, result(), rows(base_right=1, cafe_right=2))
    assert "1 of 5 baselines and 2 of 5 CAFE models" in text
    assert "no defense models" in lesson_step(4, result(), [])
    grid = {"rows": [], "adv_cafe_minus_control": {"pgd": {"delta": -0.0047, "ci95": [-0.0078, -0.0016], "n": 10000}}}
    with_grid = lesson_step(4, result(), rows(), grid)
    assert "holds for 0 of 0 defenses" in with_grid
    assert "-0.47 points" in with_grid and "the control is better" in with_grid
    assert "the control explains CAFE's gain" in with_grid


def test_headline_follows_the_outcome():
    assert "The attack worked" in explore_headline(result(), rows())
    assert "still says **Coat**" in explore_headline(result(adversarial=4), rows())
    assert "Try the undefended network" in explore_headline(result(adversarial=4))
    assert "h did not recover the right class" in explore_headline(result(causal=6))
    assert "is fooled too" in explore_headline(result(), rows(undefended_correct=False))
    assert "still gets it right" in explore_headline(result(), rows(undefended_correct=True))
    assert "already gets the clean image wrong" in explore_headline(result(natural=2))
    no_h = explore_headline(result(network="standard", causal_panels=False))
    assert "No causal estimator h" in no_h and "undefended network" in no_h
