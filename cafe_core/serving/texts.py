"""Every sentence the app shows outside the Learn tab, written from the results it describes.

Functions take plain results (``ExploreResult``, defense rows, robustness JSON) and return
markdown, so what a visitor reads always matches what the models did.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..evaluation.names import NETWORK_NAMES
from .explore import ExploreResult

TITLE = "# CAFE Lab"
SUBTITLE = ("Why adversarial examples fool neural networks, and whether *causal features* repair them "
            "(Kim, Lee, Ro, CVPR 2023, [arXiv 2303.01052](https://arxiv.org/abs/2303.01052)).")
NEXT_STEP = ("**Try it:** pick a garment in the gallery (or upload a photo), choose which network to attack, "
             "then press **Attack and explain**.")
PANELS = [("clean", "Clean"), ("adversarial", "Adversarial"), ("perturbation", "Perturbation"),
          ("inverted", "Causal inversion"), ("feature_natural", "Natural feature"),
          ("feature_adversarial", "Adversarial feature"), ("feature_causal", "Causal feature"),
          ("feature_counterfactual", "Counterfactual feature")]
PANEL_PREDICTION = {"clean": "natural", "adversarial": "adversarial", "inverted": "inverted",
                    "feature_natural": "natural", "feature_adversarial": "adversarial",
                    "feature_causal": "causal", "feature_counterfactual": "counterfactual"}
NEGATE_LABEL = "photo on a light background: negate it, as Fashion-MNIST's own photos were"
TRAIN_INTRO = ("Train a new causal estimator h and counterfactual generator g on the robust network, on a few "
               "training images (at most {images} images, {epochs} epochs; one run at a time).")
LESSON_INTRO = "Five steps through one real example, with this app's own outputs."
TABLE_HEADERS = ["network", "clean image", "attacked image"]


def mark(correct: bool | None) -> str:
    return "" if correct is None else (" ✓" if correct else " ✗")


def _said(result: ExploreResult, key: str) -> str:
    view = result.predictions[key]
    return f"**{view.class_name}** ({100 * view.confidence:.0f}%){mark(view.correct)}"


def ood_warning(ood: dict[str, Any] | None, class_names: Sequence[str]) -> str:
    """The warning shown above the results of an input that does not look like the training data."""
    if not ood or not ood["flagged"]:
        return ""
    return (f"⚠️ **This does not look like a Fashion-MNIST image** (unusualness {ood['score']:.2f}, images above "
            f"{ood['threshold']:.2f} are flagged; 95% of real test images are below). The network only knows these "
            f"ten classes: {', '.join(class_names)}, seen as light garments on a black background, so it will "
            "name one of them whatever the picture shows. The results below are computed anyway.")


def preprocessing_notes(steps: Sequence[Any], notes: Sequence[str]) -> str:
    """"What the model sees": each conversion step, in order, in plain words."""
    lines = [f"{i}. {step.description}" for i, step in enumerate(steps, 1)]
    text = "**What the model sees**\n" + ("\n".join(lines) if lines else "- used as is")
    return text + (f"\n\nNotes: {'; '.join(notes)}." if notes else "")


def gallery_items(result: ExploreResult) -> list[tuple[Any, str]]:
    """(image, caption) of every Explore panel the result has, captions with label, confidence, mark."""
    items = []
    for key, title in PANELS:
        if key not in result.images:
            continue
        caption = title if key != "perturbation" else f"{title} (x{result.perturbation_scale:.1f})"
        if key in PANEL_PREDICTION:
            view = result.predictions[PANEL_PREDICTION[key]]
            caption += f": {view.class_name} {100 * view.confidence:.0f}%{mark(view.correct)}"
        items.append((result.images[key], caption))
    return items


def explore_headline(result: ExploreResult, rows: Sequence[dict[str, Any]] = ()) -> str:
    """What happened, in two or three plain sentences, from this result's own predictions."""
    s = result.settings
    network = NETWORK_NAMES.get(s.get("network", "adv"), s.get("network", "network"))
    natural, adversarial = result.predictions["natural"], result.predictions["adversarial"]
    attack = f"{s['attack'].upper()} (eps {255 * s['eps']:.0f}/255)"
    if natural.correct is False:
        lines = [f"The {network} already gets the clean image wrong: it says {_said(result, 'natural')}; "
                 f"after {attack} it says {_said(result, 'adversarial')}."]
    elif adversarial.label != natural.label:
        lines = [f"**The attack worked.** {attack} changed pixels by at most {255 * result.linf:.0f}/255 and the "
                 f"{network} now says {_said(result, 'adversarial')} instead of **{natural.class_name}**."]
    else:
        lines = [f"**The attack failed here.** After {attack} the {network} still says {_said(result, 'adversarial')}. "
                 + ("Try the undefended network, or a larger eps." if s.get("network", "adv") != "standard"
                    else "Try a larger eps or more steps.")]
    if result.has_causal:
        causal = result.predictions["causal"]
        lines.append(f"The causal feature c(F_n + h(Z)) says {_said(result, 'causal')}"
                     + (", the label the attack tried to remove." if causal.correct and adversarial.correct is False
                        else "." if causal.correct is not False else ": h did not recover the right class here.")
                     + f" The counterfactual c(F_n + g(Z)) says {_said(result, 'counterfactual')}.")
    else:
        lines.append(f"No causal estimator h was trained for the {network}, so there are no causal panels; "
                     "switch to the robust network to see them.")
    undefended = next((r for r in rows if r.get("defense") == "none"), None)
    if undefended is not None and s.get("network", "adv") != "standard" and undefended["adversarial_correct"] is not None:
        held = undefended["adversarial_correct"]
        lines.append("The undefended network, attacked the same way on its own gradients, "
                     + ("still gets it right." if held else "is fooled too (first row of the table)."))
    return "  \n".join(lines)


def explore_summary(result: ExploreResult, notes: Sequence[str] = ()) -> str:
    """The numbers under the panels: perturbation size, KL distances, input notes."""
    text = f"**L-inf of the perturbation**: {255 * result.linf:.1f}/255"
    if result.has_causal:
        kl = result.kl_x1000
        text += (f"  \n**KL to the causal prediction (x1000)**: inverted image {kl['inversion']:.2f}, "
                 f"clean {kl['clean']:.2f}, adversarial {kl['adversarial']:.2f}")
    if notes:
        text += f"  \n**Input**: {'; '.join(notes)}"
    return text


def defense_table(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[list[str]]:
    """Rows of the every-network table: plain name, clean prediction, attacked prediction."""
    return [[r.get("name", r["defense"]),
             f"{names[r['clean_label']]} {100 * r['clean_confidence']:.0f}%{mark(r['clean_correct'])}",
             f"{names[r['adversarial_label']]} {100 * r['adversarial_confidence']:.0f}%{mark(r['adversarial_correct'])}"]
            for r in rows]


def set_description(described: dict[str, Any]) -> str:
    """One line about the loaded checkpoint set, in plain words."""
    adv = described["models"][0]
    clean, robust = adv.get("val_clean_acc"), adv.get("val_robust_acc")
    text = (f"Models trained on **{described['dataset']}** (10 clothing classes, 28x28 grey). "
            f"Robust network: {100 * clean:.0f}% right on clean validation images, {100 * robust:.0f}% under attack."
            if clean is not None and robust is not None else f"Models trained on **{described['dataset']}**.")
    if not described["has_amr"]:
        text += " This set has no causal estimator (amr.safetensors): the causal panels are unavailable."
    return text


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def claim_sentence(claim: dict[str, Any]) -> str:
    """The paper's claim, measured: for how many defenses it holds on this grid."""
    return (f"**The paper's claim** (CAFE beats its baseline on {claim['column']} by >= 1 point, CI above zero, "
            f"clean drop <= 1 point) **holds for {claim['holds_for']} of {claim['of']} defenses** on these models.")


def control_sentence(result: dict[str, Any]) -> str:
    """ADV + CAFE against the h = 0 control (same extra term, no causal estimator), from a grid JSON."""
    control = result.get("adv_cafe_minus_control") or {}
    if not control:
        return ""
    column = "pgd" if "pgd" in control else next(iter(control))
    c = control[column]
    lo, hi = c["ci95"]
    verdict = "the control is better" if hi < 0 else "CAFE is better" if lo > 0 else "no significant difference"
    return (f"**The h = 0 control**: ADV trained with the same extra term but without the causal estimator "
            f"(h = 0). ADV + CAFE minus the control on {column.upper()} ({c['n']:,} images): "
            f"{_points(c['delta'])} points [{_points(lo)}, {_points(hi)}], {verdict}. "
            + ("Here the causal estimator adds to the consistency term." if lo > 0 else
               "On our models the control explains CAFE's gain: it comes from the consistency term, not from "
               "the estimated causal features."))


def robustness_text(result: dict[str, Any], claim: dict[str, Any]) -> str:
    """The Robustness tab's header: what was measured, the paper's claim, and the h = 0 control."""
    n = result.get("n_images", {})
    text = (f"{result['dataset']} {result['backbone']}, eps {result['eps']:g}, seed {result['seed']}. "
            "Images per column: " + ", ".join(f"{k} {v}" for k, v in n.items()) +
            ". Brackets: paired bootstrap 95% CI of (row - its baseline), in points.  \n" + claim_sentence(claim))
    control = control_sentence(result)
    return text + (f"  \n{control}" if control else "")
