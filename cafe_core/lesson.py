"""The Learn tab's words: a glossary and a five-step lesson whose sentences are filled with the
app's own outputs for one example (so a class reads real numbers, not the paper's)."""
from __future__ import annotations

from typing import Any, Sequence

from .explore import ExploreResult

GLOSSARY = [
    ("Adversarial example", "An image changed by at most eps per pixel (L-inf) so that a network mislabels it."),
    ("eps", "The largest change allowed per pixel, on the [0, 1] scale; the app shows it in /255."),
    ("f and c", "The network split in two: f(x) makes a feature map, the head c turns it into class scores."),
    ("Feature variation Z", "f(x_adv) - f(x): how the attack moved the features. The instrument of the regression."),
    ("Causal estimator h", "A small network trained (AMR-GMM) so that F_n + h(Z) keeps only the part of the "
                           "variation that causes the label; c(F_n + h(Z)) is the Causal (AC) prediction."),
    ("Counterfactual generator g", "h's adversary in training: g(Z) is the worst-case variation, so "
                                   "c(F_n + g(Z)) (Counterfactual, CF) is usually wrong."),
    ("Instrumental variable", "A variable (Z) that moves the treatment (the feature T) but reaches the outcome "
                              "only through it, so it separates cause from confounding (U)."),
    ("Causal inversion", "A few signed-gradient steps that change the clean image, within eps_inv, until the "
                         "network predicts what the causal feature predicts."),
    ("Feature inversion", "An image optimised from grey until f(image) matches a target feature: a picture of "
                          "what that feature 'looks like' to the network (the paper's Fig. 3)."),
    ("CAFE", "Causal inoculation: fine-tune a defense with an extra term pulling its prediction on x_adv toward "
             "its prediction on the causally inverted image."),
    ("h = 0 control", "The same extra term with h replaced by zero, so the target is just the clean prediction: "
                      "it tells whether the estimated causal feature is what helps."),
    ("KL x1000", "Kullback-Leibler divergence between two predicted distributions, times 1000; smaller = closer."),
]

LESSON_TITLES = ["1. The clean image", "2. The attack", "3. The causal feature", "4. The counterfactual",
                 "5. Inoculated defenses"]


def glossary_markdown() -> str:
    return "\n".join(f"- **{term}**: {meaning}" for term, meaning in GLOSSARY)


def _pred(result: ExploreResult, name: str) -> str:
    view = result.predictions[name]
    return f"**{view.class_name}** ({100 * view.confidence:.0f}%)"


def lesson_step(step: int, result: ExploreResult, defenses: Sequence[dict[str, Any]] = ()) -> str:
    """Markdown for lesson step ``step`` (0-4), written from this example's own numbers."""
    s, names = result.settings, result.class_names
    truth = f"a **{names[s['true_label']]}**" if s.get("true_label") is not None else "an image of unknown class"
    if step == 0:
        return (f"This is {truth}. The adversarially trained network (ADV) reads it as {_pred(result, 'natural')}. "
                "Look at the first panel and the blue bars: that is the Natural prediction c(f(x)).")
    if step == 1:
        return (f"{s['attack'].upper()} changes every pixel by at most {255 * s['eps']:.0f}/255 (the perturbation panel is "
                f"amplified x{result.perturbation_scale:.1f}). The network now says {_pred(result, 'adversarial')}. "
                f"The red bars moved; the KL from the attacked prediction to the causal one is "
                f"{result.kl_x1000['adversarial']:.1f} (x1000).")
    if step == 2:
        return (f"h looks at the feature variation Z and keeps its causal part: c(F_n + h(Z)) = {_pred(result, 'causal')}. "
                f"Inverting the clean image toward it gives the causal-inversion panel, predicted {_pred(result, 'inverted')}; "
                f"its KL to the causal prediction is {result.kl_x1000['inversion']:.1f}, against "
                f"{result.kl_x1000['clean']:.1f} for the clean image.")
    if step == 3:
        return (f"g builds the worst-case variation: c(F_n + g(Z)) = {_pred(result, 'counterfactual')}. Compare the "
                "four feature inversions: Natural and Causal should show the object; Adversarial and Counterfactual "
                "show what the attack added. The channel bars show Z, h(Z) and g(Z) side by side.")
    if step == 4:
        if not defenses:
            return "This checkpoint set has no defense models; train the defense stage to compare them."
        right = lambda rows: sum(bool(r["adversarial_correct"]) for r in rows)  # noqa: E731
        base = [r for r in defenses if r["cafe"] is False]
        cafe = [r for r in defenses if r["cafe"] is True]
        return (f"Same attack, each defense attacked on its own gradients: {right(base)} of {len(base)} baselines and "
                f"{right(cafe)} of {len(cafe)} CAFE models keep the right label on this image. One image proves "
                "little: the Robustness tab has the test-set numbers with confidence intervals.")
    raise ValueError(f"lesson step must be 0-4, got {step}")
