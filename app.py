"""CAFE Lab web app (Gradio). Layout and wiring only: every computation lives in cafe_core.

Run: ``python app.py [--checkpoints DIR] [--host 127.0.0.1] [--port 7860] [--share]``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # works offline, in a classroom
# Square's compiled query model (cafe_core.inference) costs a ~10 s compile and compiler memory
# per worker; the app's one-image requests gain little from it, so it is off unless asked for.
os.environ.setdefault("CAFE_FAST_QUERIES", "0")

import gradio as gr  # noqa: E402

import tempfile  # noqa: E402

from cafe_core.attacks import ATTACK_INFO  # noqa: E402
from cafe_core.checkpoints import CheckpointError  # noqa: E402
from cafe_core.figures import (causal_graph, channel_bars, probability_bars, robustness_curves,  # noqa: E402
                               training_curves)
from cafe_core.images import MAX_FILE_BYTES, ImageInputError, prepare_image  # noqa: E402
from cafe_core.lab import MAX_EVAL_IMAGES, Lab, checkpoint_sets, robustness_rows  # noqa: E402
from cafe_core.lesson import LESSON_TITLES, glossary_markdown, lesson_step  # noqa: E402
from cafe_core.live_training import MAX_EPOCHS, MAX_IMAGES, check_budget, train_amr_live  # noqa: E402
from cafe_core.predict import checkpoint_dir, classify  # noqa: E402
from cafe_core.report import build_report, report_png, write_report  # noqa: E402
from cafe_core.robustness import claim_check  # noqa: E402
from cafe_core.serving import AnalysisPool, WorkerStopped  # noqa: E402

ATTACK_CHOICES = [(info.label, name) for name, info in ATTACK_INFO.items() if name not in ("fgsm_rs", "square")]
ATTACK_NAMES = {name for _, name in ATTACK_CHOICES}
DEFAULT_STEPS = 10       # PGD-10: the whole Explore answer (11 defenses included) stays near a second
FEATURE_STEPS = 25       # Fig. 3-style inversions in the app (the CLI figure uses 200)
# One torch thread per request, two requests at once: measured on 2 cores, a request running in
# gradio's worker thread with 2 torch threads took 2.8 s (its OpenMP team fights the idle, still
# spinning team of another thread) against 1.1 s with 1 thread, for the same computation.
TORCH_THREADS = 1
REPORT_ROOT = Path(tempfile.gettempdir()) / "cafe_lab_reports"
TRAIN_ROOT = Path(tempfile.gettempdir()) / "cafe_lab_train"
LESSON_EXAMPLE = 3       # index into EXAMPLES of the lesson's image
QUEUE_SIZE = 32          # waiting requests; beyond this a caller gets "Queue is full! Please try again."
CONCURRENCY = 2          # requests computed at once (2 cores)
# Explore analyses run in this many worker processes (cafe_core.serving explains why not threads);
# 0 runs them in the server process.
WORKERS = int(os.environ.get("CAFE_WORKERS", "2"))
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



def _set_label(folder: Path) -> str:
    return folder.name


def _gallery(result, names) -> list:
    """(image, caption) pairs of the Explore panels, captions with label, confidence and a mark."""
    items = []
    for key, title in PANELS:
        caption = title if key != "perturbation" else f"{title} (x{result.perturbation_scale:.1f})"
        if key in PANEL_PREDICTION:
            view = result.predictions[PANEL_PREDICTION[key]]
            mark = "" if view.correct is None else (" ✓" if view.correct else " ✗")
            caption += f": {view.class_name} {100 * view.confidence:.0f}%{mark}"
        items.append((result.images[key], caption))
    return items


def _defense_table(rows: list[dict], names) -> list[list]:
    def mark(flag):
        return "" if flag is None else (" ✓" if flag else " ✗")

    return [[r["defense"].upper(), {False: "baseline", True: "CAFE"}.get(r["cafe"], str(r["cafe"])),
             f"{names[r['clean_label']]} {100 * r['clean_confidence']:.0f}%{mark(r['clean_correct'])}",
             f"{names[r['adversarial_label']]} {100 * r['adversarial_confidence']:.0f}%{mark(r['adversarial_correct'])}"]
            for r in rows]


def build_app(checkpoints: str | Path | None = None, queue_size: int = QUEUE_SIZE, warm_up: bool = True,
              workers: int | None = None) -> gr.Blocks:
    """Build the Blocks app for the checkpoint set ``checkpoints`` (and its sibling sets).

    ``warm_up`` runs one Explore analysis at start-up (here and in every worker, in parallel), so
    the first visitor does not pay for torch's one-off initialisation (~1.5 s here).
    ``workers``: Explore worker processes (default ``WORKERS``); the Blocks keeps the pool as
    ``demo.analysis_pool`` (``.close()`` stops it).
    """
    default = checkpoint_dir(checkpoints)
    labs: dict[str, Lab] = {str(default): Lab(default)}
    pool = AnalysisPool(WORKERS if workers is None else workers)
    if warm_up and EXAMPLES and labs[str(default)].bundle is not None:
        lab0 = labs[str(default)]
        image = prepare_image(EXAMPLES[0], lab0.adv.info.channels, lab0.adv.info.image_size).tensor
        pool.warm_up(default, image)
        lab0.comparison(image, None, steps=2, feature_steps=2)
    sets = {_set_label(p): p for p in checkpoint_sets(extra=default)}
    default_label = _set_label(default)
    first = labs[str(default)]
    names = first.class_names

    def get_lab(set_name: str | None) -> Lab:
        folder = sets.get(set_name or default_label)
        if folder is None:
            raise gr.Error(f"Unknown checkpoint set {set_name!r}; available: {', '.join(sets)}")
        if str(folder) not in labs:
            try:
                labs[str(folder)] = Lab(folder)
            except CheckpointError as err:
                raise gr.Error(f"Cannot load checkpoint set {set_name}: {err}") from None
        return labs[str(folder)]

    def describe(set_name):
        lab = get_lab(set_name)
        d = lab.describe()
        adv = d["models"][0]
        text = (f"**{d['dataset']}**, backbone **{d['backbone']}**, eps {d['eps']:g} "
                f"({255 * d['eps']:.1f}/255). ADV validation: clean {100 * adv.get('val_clean_acc', float('nan')):.1f}%, "
                f"PGD {100 * adv.get('val_robust_acc', float('nan')):.1f}%. {len(d['models']) - 1} defense models."
                + ("" if d["has_amr"] else " No AMR-GMM checkpoint: Explore is unavailable."))
        return text, gr.update(choices=lab.model_names(), value="adv")

    def settings_from(attack, eps_255, steps, seed, target, lab_names):
        if attack not in ATTACK_NAMES:
            raise gr.Error(f"Unknown attack {attack!r}; choose one of {', '.join(sorted(ATTACK_NAMES))}")
        eps = checked_number(eps_255, 0, MAX_EPS_255, "eps (/255)") / 255
        steps = int(checked_number(steps, 1, MAX_STEPS, "steps"))
        seed = int(checked_number(seed, 0, 2**31 - 1, "seed"))
        if target in (None, "", "none"):
            target_label = None
        elif target in lab_names:
            target_label = lab_names.index(target)
        else:
            raise gr.Error(f"Unknown target class {target!r}")
        return dict(attack=attack, eps=eps, steps=steps, seed=seed, target=target_label, feature_steps=FEATURE_STEPS)

    def prepared_input(image, lab: Lab):
        path = upload_path(image, demo.GRADIO_CACHE)
        try:
            return prepare_image(path, lab.adv.info.channels, lab.adv.info.image_size), example_label(path)
        except ImageInputError as err:
            raise gr.Error(str(err)) from None

    def run_explore(set_name, image, attack, eps_255, steps, seed, target, use_trained, trained,
                    progress=gr.Progress()):
        lab = get_lab(set_name)
        settings = settings_from(attack, eps_255, steps, seed, target, list(lab.class_names))
        prepared, true_label = prepared_input(image, lab)
        bundle_path = None
        if use_trained:
            if not trained:
                raise gr.Error("Train h and g in the Train tab first (or untick 'use my trained h/g').")
            path = Path(trained).resolve()
            if not path.is_relative_to(TRAIN_ROOT.resolve()) or not path.is_file():
                raise gr.Error("That trained checkpoint is not available any more.")
            bundle_path = path
        progress(0.1, desc="attacking, estimating causal features, inverting, attacking every defense")
        try:
            result, rows = pool.comparison(lab.folder, prepared.tensor, true_label, bundle_path, **settings)
        except (ValueError, CheckpointError, WorkerStopped) as err:
            raise gr.Error(str(err)) from None
        kl = result.kl_x1000
        notes = "; ".join(prepared.notes)
        summary = (f"**L-inf of the perturbation**: {255 * result.linf:.1f}/255  \n"
                   f"**KL to the causal prediction (x1000)**: inverted image {kl['inversion']:.2f}, "
                   f"clean {kl['clean']:.2f}, adversarial {kl['adversarial']:.2f}"
                   + (f"  \n**Input**: {notes}" if notes else ""))
        table = _defense_table(rows, lab.class_names)
        last = {"result": result, "rows": rows, "folder": str(lab.folder)}
        return (_gallery(result, lab.class_names), probability_bars(result), channel_bars(result), summary, table,
                result.to_json(), last)

    def make_report(last):
        """The report files of the last Explore run (a chained event: the analysis shows first)."""
        if not last:
            raise gr.Error("Run an attack first: the report describes its result.")
        report = build_report(last["result"], last["rows"], last["folder"])
        folder = Path(tempfile.mkdtemp(prefix="report_", dir=REPORT_ROOT))
        json_path, png_path = write_report(report, report_png(last["result"], last["rows"]), folder)
        return [str(png_path), str(json_path)]

    def run_attributions(set_name, model_name, last):
        if not last:
            raise gr.Error("Run an attack first: attributions explain its images.")
        result = last["result"]
        lab = get_lab(set_name)
        try:
            attr = lab.attributions(result, model_name or "adv")
        except KeyError as err:
            raise gr.Error(str(err)) from None
        target = lab.class_names[attr.target]
        items = []
        for method, title in (("integrated_gradients", "IG"), ("saliency", "Saliency")):
            for key, what in (("clean", "clean"), ("adversarial", "adversarial"), ("inverted", "inverted")):
                items.append((attr.overlays[method][key], f"{title}, {what} image, toward {target}"))
        return items

    def classify_image(set_name, model_name, image):
        # The event runs with preprocess=False: gradio would decode the upload with PIL itself
        # and fail with a generic error on damaged files; cafe_core.images gives clear messages.
        lab = get_lab(set_name)
        prepared, _ = prepared_input(image, lab)
        try:
            net = lab.model(model_name or "adv")
        except KeyError as err:
            raise gr.Error(str(err)) from None
        from cafe_core.predict import LoadedModel

        result = classify(LoadedModel(net, lab.adv.card, lab.adv.info), prepared.tensor)
        notes = "\n".join(f"- {n}" for n in prepared.notes) or "- used as is"
        return result.probabilities, prepared.preview, f"**What the model sees**\n{notes}"

    def show_robustness(set_name):
        lab = get_lab(set_name)
        result = lab.robustness()
        if result is None:
            return ({"headers": ["defense", "CAFE"], "data": []}, robustness_curves({}),
                    "No robustness results for this checkpoint set yet: run "
                    "`python -m cafe_core evaluate --grid <config>`.")
        headers, rows = robustness_rows(result)
        claim = claim_check(result["rows"])
        n = result.get("n_images", {})
        text = (f"{result['dataset']} {result['backbone']}, eps {result['eps']:g}, seed {result['seed']}. "
                "Images per column: " + ", ".join(f"{k} {v}" for k, v in n.items()) +
                ". Brackets: paired bootstrap 95% CI of (row - its baseline), in points.  \n"
                f"Paper's claim (CAFE beats its baseline on {claim['column']} by >= 1 point, CI above zero, "
                f"clean drop <= 1 point): holds for {claim['holds_for']} of {claim['of']} defenses measured.")
        return {"headers": headers, "data": rows}, robustness_curves(result), text

    def evaluate_now(set_name, model_name, attack, eps_255, steps, n, progress=gr.Progress()):
        lab = get_lab(set_name)
        if attack not in ATTACK_NAMES | {"clean"}:
            raise gr.Error(f"Unknown attack {attack!r}")
        eps = checked_number(eps_255, 0, MAX_EPS_255, "eps (/255)") / 255
        steps = int(checked_number(steps, 1, MAX_STEPS, "steps"))
        n = int(checked_number(n, 1, MAX_EVAL_IMAGES, "images"))
        try:
            out = lab.evaluate_now(model_name or "adv", attack, n, eps, steps,
                                   on_batch=lambda done, total: progress(done / total, desc=f"{done}/{total} images"))
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise gr.Error(str(err)) from None
        return (f"**{out['model']}** under **{attack}** (eps {255 * out['eps']:.1f}/255, {steps} steps, seed 0) on the "
                f"first {out['n_images']} test images: **{100 * out['accuracy']:.1f}%**"), out

    def show_lesson(step, set_name):
        lab = get_lab(set_name)
        index = LESSON_TITLES.index(step) if step in LESSON_TITLES else None
        if index is None:
            raise gr.Error(f"Unknown lesson step {step!r}")
        if not EXAMPLES:
            raise gr.Error("The example gallery is missing (assets/examples).")
        example = EXAMPLES[min(LESSON_EXAMPLE, len(EXAMPLES) - 1)]
        prepared = prepare_image(example, lab.adv.info.channels, lab.adv.info.image_size)
        try:
            result, rows = pool.comparison(lab.folder, prepared.tensor, example_label(example), attack="pgd",
                                           eps=lab.adv.card["eps"], steps=DEFAULT_STEPS, seed=0,
                                           feature_steps=FEATURE_STEPS)
        except WorkerStopped as err:
            raise gr.Error(str(err)) from None
        return lesson_step(index, result, rows), _gallery(result, lab.class_names)

    def run_training(set_name, images, epochs, progress=gr.Progress()):
        lab = get_lab(set_name)
        try:
            images, epochs = check_budget(images, epochs)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        config = lab.adv.card.get("config_name")
        if not config:
            raise gr.Error("This checkpoint set does not name the recipe it was trained with.")
        TRAIN_ROOT.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="amr_", dir=TRAIN_ROOT))
        status = f"training h and g on {images} images for {epochs} epochs..."
        yield status, *training_curves([]), None
        run = None
        for run in train_amr_live(lab.folder / "adv.safetensors", config, images, epochs, out):
            if run.error:
                raise gr.Error(f"training failed: {run.error}")
            losses, accs = training_curves(run.records)
            done = run.done and run.out.is_file()
            status = (f"epoch {len(run.records)}/{epochs}" + (" - done: tick 'use my trained h/g' in Explore" if done else ""))
            yield status, losses, accs, (str(run.out) if done else None)
        if run is None or not run.out.is_file():
            raise gr.Error("training stopped before writing a checkpoint")

    with gr.Blocks(title="CAFE Lab") as demo:
        gr.Markdown("# CAFE Lab\nWhy adversarial examples fool neural networks, and how causal features repair them "
                    "(Kim, Lee, Ro, CVPR 2023).")
        trained = gr.State(None)
        last_result = gr.State(None)
        with gr.Row():
            set_choice = gr.Dropdown(list(sets), value=default_label, label="checkpoint set", scale=1)
            model_choice = gr.Dropdown(first.model_names(), value="adv", label="model (classify, attributions, evaluate)",
                                       scale=1)
            set_info = gr.Markdown(describe(default_label)[0])
        with gr.Tab("Explore"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"])
                    if EXAMPLES:
                        gr.Examples(EXAMPLES, inputs=image, label="Fashion-MNIST test images")
                    attack = gr.Dropdown(ATTACK_CHOICES, value="pgd", label="Attack")
                    eps = gr.Slider(0, MAX_EPS_255, value=round(255 * first.adv.card["eps"]), step=1,
                                    label="eps in /255")
                    eps_unit = gr.Markdown(f"= {first.adv.card['eps']:.4f} on the [0, 1] pixel scale")
                    steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="attack steps")
                    seed = gr.Number(0, precision=0, label="seed")
                    target = gr.Dropdown(["none", *names], value="none", label="target class (optional)")
                    use_trained = gr.Checkbox(False, label="use my trained h/g (Train tab)")
                    run = gr.Button("Attack and explain", variant="primary")
                    classify_button = gr.Button("Classify only")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="clean | adversarial | perturbation | causal inversion | "
                                         "feature inversions", columns=4, height="auto", elem_id="explore-gallery", format="png")
                    summary = gr.Markdown(elem_id="explore-summary")
                    defense_table = gr.Dataframe(headers=["defense", "CAFE", "clean", "attacked"],
                                                 label="every defense, same attack, same image", interactive=False)
                    probs = gr.Plot(label="probabilities")
                    channel_plot = gr.Plot(label="channels")
                    attributions = gr.Gallery(label="attributions (captum): red = evidence for the class",
                                              columns=3, height="auto", format="png")
                    report_files = gr.File(label="report (PNG panel + JSON to reproduce)", file_count="multiple",
                                           interactive=False)
                    numbers = gr.JSON(label="all numbers (settings, predictions, KL)")
                    label = gr.Label(num_top_classes=3, label="Prediction")
                    seen = gr.Image(label="Model input", interactive=False, height=200)
                    notes = gr.Markdown()
        with gr.Tab("Robustness"):
            robustness_text = gr.Markdown()
            robustness_table = gr.Dataframe(label="robust accuracy % [CI of the difference to the baseline]",
                                            interactive=False)
            curves = gr.Plot(label="robust accuracy vs eps")
            with gr.Row():
                eval_attack = gr.Dropdown([("Clean", "clean"), *ATTACK_CHOICES], value="pgd", label="attack")
                eval_eps = gr.Slider(0, MAX_EPS_255, value=round(255 * first.adv.card["eps"]), step=1, label="eps /255")
                eval_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                eval_n = gr.Slider(10, MAX_EVAL_IMAGES, value=100, step=10, label="test images")
            eval_button = gr.Button("Evaluate now")
            eval_text = gr.Markdown()
            eval_json = gr.JSON(label="result")
        with gr.Tab("Train"):
            gr.Markdown("Train a new causal estimator h and counterfactual generator g on the ADV model, on a few "
                        f"training images (at most {MAX_IMAGES} images, {MAX_EPOCHS} epochs; one run at a time).")
            with gr.Row():
                train_images = gr.Slider(100, MAX_IMAGES, value=500, step=100, label="training images")
                train_epochs = gr.Slider(1, MAX_EPOCHS, value=2, step=1, label="epochs")
            with gr.Row():
                train_button = gr.Button("Train h and g", variant="primary")
                cancel_button = gr.Button("Cancel")
            train_status = gr.Markdown()
            with gr.Row():
                loss_plot = gr.Plot(label="losses")
                acc_plot = gr.Plot(label="accuracies")
        with gr.Tab("Learn"):
            gr.Plot(causal_graph(), label="the causal graph")
            gr.Markdown("## Glossary\n" + glossary_markdown())
            gr.Markdown("## A guided lesson\nFive steps through one real example, with this app's own outputs.")
            lesson_choice = gr.Radio(LESSON_TITLES, value=LESSON_TITLES[0], label="step")
            lesson_button = gr.Button("Show this step")
            lesson_text = gr.Markdown()
            lesson_gallery = gr.Gallery(columns=4, height="auto", label="the example", format="png")

        set_choice.change(describe, inputs=set_choice, outputs=[set_info, model_choice], api_name="describe")
        eps.change(lambda v: f"= {float(v) / 255:.4f} on the [0, 1] pixel scale", inputs=eps, outputs=eps_unit,
                   api_name=False, queue=False)
        explore_event = run.click(
            run_explore, inputs=[set_choice, image, attack, eps, steps, seed, target, use_trained, trained],
            outputs=[gallery, probs, channel_plot, summary, defense_table, numbers, last_result],
            api_name="explore", preprocess=False)
        explore_event.success(make_report, inputs=last_result, outputs=report_files, api_name="report")
        explore_event.success(run_attributions, inputs=[set_choice, model_choice, last_result], outputs=attributions,
                              api_name="attributions")
        classify_button.click(classify_image, inputs=[set_choice, model_choice, image], outputs=[label, seen, notes],
                              api_name="classify", preprocess=False)
        robustness_event = gr.on([demo.load, set_choice.change], show_robustness, inputs=set_choice,
                                 outputs=[robustness_table, curves, robustness_text], api_name="robustness")
        eval_button.click(evaluate_now, inputs=[set_choice, model_choice, eval_attack, eval_eps, eval_steps, eval_n],
                          outputs=[eval_text, eval_json], api_name="evaluate_now", concurrency_limit=1)
        train_event = train_button.click(run_training, inputs=[set_choice, train_images, train_epochs],
                                         outputs=[train_status, loss_plot, acc_plot, trained], api_name="train",
                                         concurrency_limit=1, concurrency_id="train")
        cancel_button.click(lambda: "cancelled", outputs=train_status, cancels=[train_event], api_name="cancel_train",
                            queue=False)
        lesson_button.click(show_lesson, inputs=[lesson_choice, set_choice], outputs=[lesson_text, lesson_gallery],
                            api_name="lesson")
        del robustness_event
    REPORT_ROOT.mkdir(parents=True, exist_ok=True)
    demo.queue(max_size=queue_size, default_concurrency_limit=CONCURRENCY)
    demo.analysis_pool = pool
    return demo


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
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=MAX_FILE_BYTES, show_error=True, allowed_paths=[str(REPORT_ROOT)])


if __name__ == "__main__":
    main()
