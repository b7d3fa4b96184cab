"""The Learn tab's words: a glossary and a five-step lesson whose sentences are filled with the
app's own outputs for one example (so a class reads real numbers, not the paper's)."""
from __future__ import annotations

from typing import Any, Sequence

from ..evaluation.names import NETWORK_NAMES
from ..evaluation.statistics import claim_check
from .explore import ExploreResult
from .texts import claim_sentence, control_sentence, mark

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
    return f"**{view.class_name}** ({100 * view.confidence:.0f}%){mark(view.correct)}"


def _step_clean(result: ExploreResult, truth: str, network: str) -> str:
    natural = result.predictions["natural"]
    text = f"This is {truth}. The {network} reads it as {_pred(result, 'natural')}"
    if natural.correct is False:
        return text + ": it is already wrong before any attack, so what follows shows an attack on a mistake."
    return text + ". That is the Natural prediction c(f(x)): the first panel and the blue bars."


def _step_attack(result: ExploreResult, defenses: Sequence[dict[str, Any]], network: str) -> str:
    s = result.settings
    natural, adversarial = result.predictions["natural"], result.predictions["adversarial"]
    text = (f"{s['attack'].upper()} changes every pixel by at most {255 * s['eps']:.0f}/255 (the perturbation panel is "
            f"amplified x{result.perturbation_scale:.1f}). ")
    if adversarial.label != natural.label:
        text += (f"The {network} now says {_pred(result, 'adversarial')}: a change you can hardly see fooled it. "
                 "The red bars moved.")
    else:
        text += (f"The {network} still says {_pred(result, 'adversarial')}: **this time the attack failed**. "
                 + ("In Explore, attack the undefended network instead, or raise eps, to see an attack that works."
                    if s.get("network", "adv") != "standard" else "In Explore, raise eps or the number of steps."))
    undefended = next((r for r in defenses if r.get("defense") == "none"), None)
    if undefended is not None and s.get("network", "adv") != "standard":
        names = result.class_names
        text += (f" The undefended network, attacked the same way on its own gradients, says "
                 f"**{names[undefended['adversarial_label']]}**{mark(undefended['adversarial_correct'])}.")
    return text


def _step_causal(result: ExploreResult) -> str:
    causal, adversarial = result.predictions["causal"], result.predictions["adversarial"]
    text = f"h looks at the feature variation Z and keeps its causal part: c(F_n + h(Z)) = {_pred(result, 'causal')}. "
    if causal.correct is None:
        text += "The true class is unknown, so we cannot say whether it is right. "
    elif causal.correct and adversarial.correct is False:
        text += "The causal feature kept the true class although the attack changed the prediction. "
    elif causal.correct:
        text += "It agrees with the true class, as the attacked prediction does here. "
    else:
        text += "**Here h did not recover the true class**: the causal feature is wrong too. "
    text += (f"Inverting the clean image toward it gives the causal-inversion panel, predicted {_pred(result, 'inverted')}; "
             f"its KL to the causal prediction is {result.kl_x1000['inversion']:.1f} (x1000), against "
             f"{result.kl_x1000['clean']:.1f} for the clean image.")
    return text


def _step_counterfactual(result: ExploreResult) -> str:
    cf = result.predictions["counterfactual"]
    text = f"g builds the worst-case variation: c(F_n + g(Z)) = {_pred(result, 'counterfactual')}. "
    if cf.correct is False:
        text += "Without its causal part the variation points to the wrong class, as the attack wanted. "
    elif cf.correct:
        text += "Here even the counterfactual keeps the true class: g found no harmful variation for this image. "
    text += ("Compare the four feature inversions (pictures of what each feature looks like to the network) and "
             "the channel bars of Z, h(Z) and g(Z).")
    return text


def _step_defenses(defenses: Sequence[dict[str, Any]], grid: dict[str, Any] | None) -> str:
    rows = [r for r in defenses if r.get("defense") != "none"]
    if not rows:
        return "This checkpoint set has no defense models; train the defense stage to compare them."
    base = [r for r in rows if r["cafe"] is False]
    cafe = [r for r in rows if r["cafe"] is True]
    right = sum(bool(r["adversarial_correct"]) for r in base), sum(bool(r["adversarial_correct"]) for r in cafe)
    text = (f"Same attack, each defense attacked on its own gradients: {right[0]} of {len(base)} baselines and "
            f"{right[1]} of {len(cafe)} CAFE models keep the right label on this image. One image proves little.")
    if grid is not None:
        claim = claim_check(grid["rows"])
        text += f"  \nOn the test set: {claim_sentence(claim)}"
        control = control_sentence(grid)
        if control:
            text += f"  \n{control}"
    return text


def lesson_step(step: int, result: ExploreResult, defenses: Sequence[dict[str, Any]] = (),
                grid: dict[str, Any] | None = None) -> str:
    """Markdown for lesson step ``step`` (0-4), every sentence chosen by this example's outcome.

    Args:
        defenses: the rows of the every-network table for the same attack (step 2 and 5).
        grid: the checkpoint set's robustness JSON (step 5's test-set numbers), if any.
    """
    s, names = result.settings, result.class_names
    truth = f"a **{names[s['true_label']]}**" if s.get("true_label") is not None else "an image of unknown class"
    network = NETWORK_NAMES.get(s.get("network", "adv"), "network")
    if step in (2, 3) and not result.has_causal:
        return (f"No causal estimator h (and counterfactual generator g) was trained for the {network}: "
                "this step needs the robust network.")
    if step == 0:
        return _step_clean(result, truth, network)
    if step == 1:
        return _step_attack(result, defenses, network)
    if step == 2:
        return _step_causal(result)
    if step == 3:
        return _step_counterfactual(result)
    if step == 4:
        return _step_defenses(defenses, grid)
    raise ValueError(f"lesson step must be 0-4, got {step}")
