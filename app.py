"""CAFE Lab web app (Gradio). Layout and wiring only: every computation lives in cafe_core.

Run: ``python app.py [--checkpoints DIR] [--host 127.0.0.1] [--port 7860] [--share]``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # works offline, in a classroom

import gradio as gr  # noqa: E402

from cafe_core.checkpoints import CheckpointError  # noqa: E402
from cafe_core.images import MAX_FILE_BYTES, ImageInputError, prepare_image  # noqa: E402
from cafe_core.predict import checkpoint_dir, classify, load_stage  # noqa: E402

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


def build_app(checkpoints: str | Path | None = None) -> gr.Blocks:
    """Build the Blocks app serving the ADV model of the checkpoint set ``checkpoints``."""
    folder = checkpoint_dir(checkpoints)
    loaded = load_stage(folder, "adv")
    metrics = loaded.card.get("metrics", {})

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
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"])
                button = gr.Button("Classify", variant="primary")
                if EXAMPLES:
                    gr.Examples(EXAMPLES, inputs=image, label="Fashion-MNIST test images")
            with gr.Column():
                label = gr.Label(num_top_classes=3, label="Prediction (ADV model)")
                seen = gr.Image(label="Model input", interactive=False, height=200)
                notes = gr.Markdown()
        button.click(classify_image, inputs=image, outputs=[label, seen, notes], api_name="classify",
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
