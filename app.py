"""CAFE Lab web app (Gradio): layout and wiring only; every handler is in cafe_core.serving.handlers.

Run: ``python app.py [--checkpoints DIR] [--host 127.0.0.1] [--port 7860] [--share] [--workers N]``.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # works offline, in a classroom

import gradio as gr  # noqa: E402

from cafe_core.data.images import MAX_FILE_BYTES  # noqa: E402
from cafe_core.io.checkpoints import CheckpointError  # noqa: E402
from cafe_core.serving import handlers as h, texts  # noqa: E402
from cafe_core.serving.figures import causal_graph, training_curves  # noqa: E402
from cafe_core.serving.lesson import LESSON_TITLES, glossary_markdown  # noqa: E402
from cafe_core.serving.settings import (ATTACK_CHOICES, CONCURRENCY, DEFAULT_STEPS, MAX_EPS_255,  # noqa: E402
                                        MAX_STEPS, QUEUE_SIZE, TORCH_THREADS, WORKERS, UserError, default_eps_255)
from cafe_core.training.live_training import MAX_EPOCHS, MAX_IMAGES  # noqa: E402

CSS = (Path(__file__).resolve().parent / "assets" / "app.css").read_text()


def shown(fn):
    """``fn`` with its ``UserError`` shown to the user as a gradio error (generators too)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args):
            try:
                yield from fn(*args)
            except UserError as err:
                raise gr.Error(str(err)) from None
        return stream

    @functools.wraps(fn)
    def call(*args):
        try:
            return fn(*args)
        except UserError as err:
            raise gr.Error(str(err)) from None
    return call


def build_app(checkpoints=None, queue_size: int = QUEUE_SIZE, warm_up: bool = True, workers: int | None = None) -> gr.Blocks:
    """The app for ``checkpoints`` (and sibling sets): ``warm_up`` see handlers.start_up; ``demo.context``."""
    ctx = h.AppContext.create(checkpoints, WORKERS if workers is None else workers)
    first, lab = (h.start_up(ctx) if warm_up else None), ctx.first
    eps_255, names = default_eps_255(lab.adv.card["eps"]), list(lab.class_names)

    with gr.Blocks(title="CAFE Lab") as demo:
        ctx.upload_roots.append(Path(demo.GRADIO_CACHE).resolve())
        gr.Markdown(f"{texts.TITLE}\n{texts.SUBTITLE}")
        trained, last = gr.State(None), gr.State(first.last if first else None)
        with gr.Row(visible=len(ctx.sets) > 1, elem_id="set-row"):
            set_choice = gr.Dropdown(list(ctx.sets), value=ctx.default_set, label="checkpoint set")
            set_info = gr.Markdown(h.describe(ctx, ctx.default_set))
        with gr.Tab("Explore"):
            gr.Markdown(texts.NEXT_STEP, elem_id="next-step")
            headline = gr.Markdown(first.headline if first else "", elem_id="explore-headline")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    image = gr.Image(str(ctx.examples[0]) if ctx.examples else None, type="filepath", label="Image",
                                     sources=["upload", "clipboard", "webcam"], height=220,
                                     elem_id="input-image")
                    negate = gr.Checkbox(True, label=texts.NEGATE_LABEL)
                    network = gr.Radio(h.network_choices(lab), value="adv", label="network to attack")
                    with gr.Row():
                        run, classify_button = gr.Button("Attack and explain", variant="primary"), gr.Button("Classify only")
                    if ctx.examples:
                        gr.Examples([str(p) for p in ctx.examples], inputs=image, examples_per_page=10,
                                    label="Fashion-MNIST test images (chosen by a written rule: assets/examples)",
                                    elem_id="example-gallery")
                    with gr.Accordion("attack settings", open=False):
                        attack = gr.Dropdown(ATTACK_CHOICES, value="pgd", label="attack")
                        eps = gr.Slider(0, MAX_EPS_255, value=eps_255, step=1, label="eps: largest change per pixel, in /255")
                        steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="attack steps")
                        seed = gr.Number(0, precision=0, label="seed")
                        target = gr.Dropdown(["none", *names], value="none", label="target class (optional)")
                        use_trained = gr.Checkbox(False, label="use my trained h/g (Train tab)")
                with gr.Column(scale=2, min_width=300):
                    gallery = gr.Gallery(first.gallery if first else None, label="clean | adversarial | perturbation | "
                                         "causal inversion | feature inversions", columns=4, height="auto",
                                         elem_id="explore-gallery", format="png")
                    summary = gr.Markdown(first.summary if first else "", elem_id="explore-summary")
                    table = gr.Dataframe(first.table if first else None, headers=texts.TABLE_HEADERS, interactive=False,
                                         label="every network, attacked the same way on its own gradients", wrap=True)
                    probs = gr.Plot(first.probabilities if first else None, label="probabilities")
                    channels = gr.Plot(first.channels if first else None, label="channels")
                    model_choice = gr.Dropdown(h.model_choices(lab), value="adv", label="network for classify, "
                                               "attributions and evaluate")
                    attributions = gr.Gallery(label="attributions (captum): red = evidence for the class", columns=3,
                                              height="auto", format="png")
                    report_files = gr.File(label="report (PNG panel + JSON to reproduce)", file_count="multiple",
                                           interactive=False)
                    numbers = gr.JSON(first.numbers if first else None, label="all numbers (settings, predictions, KL)")
                    label, notes = gr.Label(num_top_classes=3, label="prediction"), gr.Markdown()
                    seen = gr.Image(label="model input", interactive=False, height=200)
                    steps_gallery = gr.Gallery(first.steps if first else None, label="what the model sees: each "
                                               "conversion step, before | after", columns=3, height="auto", format="png")
        with gr.Tab("Robustness"):
            robustness_text, robustness_table = gr.Markdown(), gr.Dataframe(label="robust accuracy % [CI of the difference to the baseline]",
                                            interactive=False, wrap=True)
            curves = gr.Plot(label="robust accuracy vs eps")
            with gr.Row():
                eval_attack = gr.Dropdown([("Clean", "clean"), *ATTACK_CHOICES], value="pgd", label="attack")
                eval_eps = gr.Slider(0, MAX_EPS_255, value=eps_255, step=1, label="eps /255")
                eval_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                eval_n = gr.Slider(10, h.MAX_EVAL_IMAGES, value=100, step=10, label="test images")
            eval_button, eval_text, eval_json = gr.Button("Evaluate now"), gr.Markdown(), gr.JSON(label="result")
        with gr.Tab("Train"):
            gr.Markdown(texts.TRAIN_INTRO.format(images=MAX_IMAGES, epochs=MAX_EPOCHS))
            with gr.Row():
                train_images = gr.Slider(100, MAX_IMAGES, value=500, step=100, label="training images")
                train_epochs = gr.Slider(1, MAX_EPOCHS, value=2, step=1, label="epochs")
            with gr.Row():
                train_button, cancel_button = gr.Button("Train h and g", variant="primary"), gr.Button("Cancel")
            train_status = gr.Markdown()
            with gr.Row():
                loss_plot, acc_plot = gr.Plot(training_curves([])[0], label="losses"), gr.Plot(label="accuracies")
        with gr.Tab("Learn"):
            gr.Plot(causal_graph(), label="the causal graph")
            gr.Markdown(f"## Glossary\n{glossary_markdown()}\n## A guided lesson\n{texts.LESSON_INTRO}")
            lesson_choice = gr.Radio(LESSON_TITLES, value=LESSON_TITLES[0], label="step")
            lesson_button, lesson_text = gr.Button("Show this step"), gr.Markdown()
            lesson_gallery = gr.Gallery(columns=4, height="auto", label="the example", format="png",
                                        elem_id="lesson-gallery")

        def explore(*args):
            return h.run_explore(ctx, *args).outputs()

        def evaluate(set_name, model, attack_, eps_, steps_, n, progress=gr.Progress()):
            return h.evaluate_now(ctx, set_name, model, attack_, eps_, steps_, n,
                                  on_batch=lambda done, total: progress(done / total, desc=f"{done}/{total} images"))

        def describe(set_name):
            return (h.describe(ctx, set_name), gr.update(choices=h.model_choices(ctx.lab(set_name)), value="adv"),
                    gr.update(choices=h.network_choices(ctx.lab(set_name)), value="adv"))

        bound = lambda fn: shown(functools.partial(fn, ctx))  # noqa: E731  (a handler with this app's context)

        set_choice.change(shown(describe), set_choice, [set_info, model_choice, network], api_name="describe")
        explore_event = run.click(
            shown(explore), [set_choice, image, network, attack, eps, steps, seed, target, use_trained, trained, negate],
            [gallery, headline, probs, channels, summary, table, numbers, steps_gallery, last], api_name="explore",
            preprocess=False)
        explore_event.success(shown(h.make_report), last, report_files, api_name="report")
        explore_event.success(bound(h.run_attributions), [set_choice, model_choice, last], attributions,
                              api_name="attributions")
        # preprocess=False: cafe_core.data.images decodes uploads itself, with clear messages for damaged files.
        classify_button.click(bound(h.classify_upload), [set_choice, model_choice, image, negate],
                              [label, seen, notes, steps_gallery, numbers], api_name="classify", preprocess=False)
        gr.on([demo.load, set_choice.change], bound(h.show_robustness), set_choice,
              [robustness_table, curves, robustness_text], api_name="robustness")
        eval_button.click(shown(evaluate), [set_choice, model_choice, eval_attack, eval_eps, eval_steps, eval_n],
                          [eval_text, eval_json], api_name="evaluate_now", concurrency_limit=1)
        train_event = train_button.click(bound(h.run_training), [set_choice, train_images, train_epochs],
                                         [train_status, loss_plot, acc_plot, trained], api_name="train",
                                         concurrency_limit=1, concurrency_id="train")
        cancel_button.click(lambda: "cancelled", outputs=train_status, cancels=[train_event], api_name="cancel_train",
                            queue=False)
        lesson_button.click(bound(h.show_lesson), [lesson_choice, set_choice], [lesson_text, lesson_gallery],
                            api_name="lesson")
        gr.api(functools.partial(h.cache_stats, ctx), api_name="cache_stats", queue=False)
    demo.queue(max_size=queue_size, default_concurrency_limit=CONCURRENCY)
    demo.context, demo.analysis_pool = ctx, ctx.pool  # analysis_pool.close() stops the workers
    return demo


def launch(demo: gr.Blocks, **options):
    """``demo.launch`` with the app's page style, upload limit and report folder (tests use it too)."""
    return demo.launch(css=CSS, max_file_size=MAX_FILE_BYTES, allowed_paths=[str(h.REPORT_ROOT), str(h.IMAGE_ROOT)],
                       **options)


def main() -> None:
    parser = argparse.ArgumentParser(description="CAFE Lab web app")
    parser.add_argument("--checkpoints", default=None, help="checkpoint set folder (or $CAFE_CHECKPOINTS)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="Explore worker processes (default: $CAFE_WORKERS or 2; 0 = in the server process)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(TORCH_THREADS)
    try:
        demo = build_app(args.checkpoints, workers=args.workers)
    except CheckpointError as err:
        raise SystemExit(f"cannot start: {err}") from None
    launch(demo, server_name=args.host, server_port=args.port, share=args.share, show_error=True)


if __name__ == "__main__":
    main()
