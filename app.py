"""CAFE Lab web app (Gradio). Layout and wiring only: every computation lives in cafe_core.

Run: ``python app.py [--checkpoints DIR] [--host 127.0.0.1] [--port 7860] [--share]``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # works offline, in a classroom

import gradio as gr  # noqa: E402

from cafe_core.checkpoints import CheckpointError  # noqa: E402
from cafe_core.images import MAX_FILE_BYTES, ImageInputError, prepare_image  # noqa: E402
from cafe_core.analysis import load_amr  # noqa: E402
from cafe_core.attacks import ATTACK_INFO  # noqa: E402
from cafe_core.explore import explore  # noqa: E402
from cafe_core.figures import channel_bars, probability_bars  # noqa: E402
from cafe_core.predict import checkpoint_dir, classify, load_stage  # noqa: E402

ATTACK_CHOICES = [(info.label, name) for name, info in ATTACK_INFO.items() if name != "fgsm_rs"]
MAX_STEPS = 100          # server-side caps: the UI sliders are not trusted
MAX_EPS_255 = 64
PANELS = [("clean", "Clean"), ("adversarial", "Adversarial"), ("perturbation", "Perturbation"),
          ("inverted", "Causal inversion"), ("feature_natural", "Feature inversion: Natural"),
          ("feature_adversarial", "Feature inversion: Adversarial"), ("feature_causal", "Feature inversion: Causal"),
          ("feature_counterfactual", "Feature inversion: Counterfactual")]
PANEL_PREDICTION = {"clean": "natural", "adversarial": "adversarial", "inverted": "inverted",
                    "feature_natural": "natural", "feature_adversarial": "adversarial",
                    "feature_causal": "causal", "feature_counterfactual": "counterfactual"}

EXAMPLE_DIR = Path(__file__).resolve().parent / "assets" / "examples"
EXAMPLES = sorted(str(p) for p in EXAMPLE_DIR.glob("*.png"))


def upload_path(image: dict | str | None, cache_dir: str | Path) -> str:
    """The file behind an image event value, only if it lies in gradio's upload cache or the
    example gallery (an API caller must not make the server read arbitrary paths)."""
    path = image.get("path") if isinstance(image, dict) else image
    if not path:
        raise gr.Error("Upload an image or pick an example first.")
    resolved = Path(path).resolve()
    allowed = (Path(cache_dir).resolve(), EXAMPLE_DIR)
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise gr.Error("That file is not an upload of this session.")
    return str(resolved)


def _example_labels() -> dict[str, int]:
    """sha256 of each gallery file -> its class (file names are ``<label>_<name>_test<i>.png``).

    Matched by content because gradio hands the handler a cached copy, not the gallery path.
    """
    return {hashlib.sha256(Path(p).read_bytes()).hexdigest(): int(Path(p).name.split("_", 1)[0])
            for p in EXAMPLES if Path(p).name.split("_", 1)[0].isdigit()}


EXAMPLE_LABELS = _example_labels()


def example_label(path: str) -> int | None:
    """True class of an image if it is one of the gallery's test images, else None."""
    return EXAMPLE_LABELS.get(hashlib.sha256(Path(path).read_bytes()).hexdigest())


def checked_number(value, low: float, high: float, what: str) -> float:
    """A finite number within [low, high], else a clear error (API callers bypass the sliders)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what} must be a number") from None
    if number != number or not low <= number <= high:
        raise gr.Error(f"{what} must be between {low:g} and {high:g}, got {value}")
    return number


def build_app(checkpoints: str | Path | None = None) -> gr.Blocks:
    """Build the Blocks app serving the ADV model of the checkpoint set ``checkpoints``."""
    folder = checkpoint_dir(checkpoints)
    loaded = load_stage(folder, "adv")
    metrics = loaded.card.get("metrics", {})
    bundle = load_amr(folder / "amr.safetensors") if (folder / "amr.safetensors").is_file() else None
    names = loaded.class_names

    def run_explore(image, attack, eps_255, steps, seed, target, progress=gr.Progress()):
        if bundle is None:
            raise gr.Error("This checkpoint set has no AMR-GMM checkpoint (amr.safetensors).")
        if attack not in dict((v, k) for k, v in ATTACK_CHOICES):
            raise gr.Error(f"Unknown attack {attack!r}")
        eps = checked_number(eps_255, 0, MAX_EPS_255, "eps (/255)") / 255
        steps = int(checked_number(steps, 1, MAX_STEPS, "steps"))
        seed = int(checked_number(seed, 0, 2**31 - 1, "seed"))
        target_label = None if target in (None, "", "none") else names.index(target) if target in names else None
        if target not in (None, "", "none") and target_label is None:
            raise gr.Error(f"Unknown target class {target!r}")
        path = upload_path(image, demo.GRADIO_CACHE)
        try:
            prepared = prepare_image(path, loaded.info.channels, loaded.info.image_size)
        except ImageInputError as err:
            raise gr.Error(str(err)) from None
        progress(0.1, desc="attacking, estimating causal features, inverting")
        try:
            result = explore(bundle, prepared.tensor, example_label(path), names, attack=attack, eps=eps,
                             steps=steps, seed=seed, target=target_label)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        gallery = []
        for key, title in PANELS:
            caption = title if key != "perturbation" else f"{title} (x{result.perturbation_scale:.1f})"
            if key in PANEL_PREDICTION:
                view = result.predictions[PANEL_PREDICTION[key]]
                mark = "" if view.correct is None else (" ✓" if view.correct else " ✗")
                caption += f": {view.class_name} {100 * view.confidence:.0f}%{mark}"
            gallery.append((result.images[key], caption))
        kl = result.kl_x1000
        summary = (f"**L-inf of the perturbation**: {255 * result.linf:.1f}/255  \n"
                   f"**KL to the causal prediction (x1000)**: inverted image {kl['inversion']:.2f}, "
                   f"clean {kl['clean']:.2f}, adversarial {kl['adversarial']:.2f}")
        return gallery, probability_bars(result), channel_bars(result), summary, result.to_json()

    def classify_image(image: dict | str | None):
        # The event runs with preprocess=False: gradio would decode the upload with PIL itself
        # and fail with a generic error on damaged files; cafe_core.images gives clear messages.
        path = upload_path(image, demo.GRADIO_CACHE)
        try:
            prepared = prepare_image(path, loaded.info.channels, loaded.info.image_size)
        except ImageInputError as err:
            raise gr.Error(str(err)) from None
        result = classify(loaded, prepared.tensor)
        notes = "\n".join(f"- {n}" for n in prepared.notes) or "- used as is"
        return result.probabilities, prepared.preview, f"**What the model sees**\n{notes}"

    with gr.Blocks(title="CAFE Lab") as demo:
        gr.Markdown(
            "# CAFE Lab\nWhy adversarial examples fool neural networks, and how causal features "
            f"repair them. Model: **{loaded.card['backbone']}** adversarially trained on "
            f"**{loaded.info.name}** (eps {loaded.card['eps']:g}; validation clean accuracy "
            f"{100 * metrics.get('val_clean_acc', float('nan')):.1f}%, PGD "
            f"{100 * metrics.get('val_robust_acc', float('nan')):.1f}%).")
        with gr.Tab("Explore"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"])
                    if EXAMPLES:
                        gr.Examples(EXAMPLES, inputs=image, label="Fashion-MNIST test images")
                    attack = gr.Dropdown(ATTACK_CHOICES, value="pgd", label="Attack")
                    eps = gr.Slider(0, MAX_EPS_255, value=round(255 * loaded.card["eps"]), step=1,
                                    label="eps in /255 (pixel scale [0,1] = value / 255)")
                    steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="attack steps")
                    seed = gr.Number(0, precision=0, label="seed")
                    target = gr.Dropdown(["none", *names], value="none", label="target class (optional)")
                    run = gr.Button("Attack and explain", variant="primary")
                    classify_button = gr.Button("Classify only")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="clean | adversarial | perturbation | causal inversion | "
                                         "feature inversions", columns=4, height="auto")
                    summary = gr.Markdown()
                    probs = gr.Plot(label="probabilities")
                    channel_plot = gr.Plot(label="channels")
                    numbers = gr.JSON(label="all numbers (settings, predictions, KL)")
                    label = gr.Label(num_top_classes=3, label="Prediction (ADV model)")
                    seen = gr.Image(label="Model input", interactive=False, height=200)
                    notes = gr.Markdown()
        run.click(run_explore, inputs=[image, attack, eps, steps, seed, target],
                  outputs=[gallery, probs, channel_plot, summary, numbers], api_name="explore", preprocess=False)
        classify_button.click(classify_image, inputs=image, outputs=[label, seen, notes], api_name="classify",
                              preprocess=False)
    demo.queue(max_size=32, default_concurrency_limit=2)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="CAFE Lab web app")
    parser.add_argument("--checkpoints", default=None, help="checkpoint set folder (or $CAFE_CHECKPOINTS)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args()
    try:
        demo = build_app(args.checkpoints)
    except CheckpointError as err:
        raise SystemExit(f"cannot start: {err}") from None
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=MAX_FILE_BYTES, show_error=True)


if __name__ == "__main__":
    main()
