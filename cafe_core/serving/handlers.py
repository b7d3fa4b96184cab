"""What each of the app's buttons does, as plain functions over an ``AppContext``.

app.py only lays out the page and wires events to these functions; they return plain data
(arrays, markdown, plotly figures, lists) and raise ``UserError`` with a message for the user,
so the tests call them directly, without a server. Nothing here imports gradio.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from ..data.images import ImageInputError, PreparedImage
from ..evaluation.names import network_name
from ..evaluation.statistics import claim_check
from ..io.checkpoints import CheckpointError
from ..io.provenance import REPO_ROOT
from ..io.serialization import atomic_write
from ..training.live_training import check_budget, train_amr_live
from .figures import channel_bars, probability_bars, robustness_curves, training_curves
from .gallery import lesson_example as gallery_lesson_example
from .gallery import read_manifest
from .lab import MAX_EVAL_IMAGES, Lab, checkpoint_sets, robustness_rows
from .lesson import LESSON_TITLES, lesson_step
from .predict import LoadedModel, checkpoint_dir, classify
from .report import build_report, report_png, write_report
from .settings import (MAX_EPS_255, MAX_STEPS, UserError, checked_attack, checked_number, explore_defaults,
                       explore_settings)
from .texts import (TABLE_HEADERS, defense_table, explore_headline, explore_summary, gallery_items, ood_warning,
                    preprocessing_notes, robustness_text, set_description)
from .workers import AnalysisPool, WorkerStopped

# Square's compiled query model (cafe_core.attacks.inference) costs a ~10 s compile and compiler memory
# per worker; the app's one-image requests gain little from it, so it is off unless asked for.
os.environ.setdefault("CAFE_FAST_QUERIES", "0")
EXAMPLE_DIR = REPO_ROOT / "assets" / "examples"
REPORT_ROOT = Path(tempfile.gettempdir()) / "cafe_lab_reports"
TRAIN_ROOT = Path(tempfile.gettempdir()) / "cafe_lab_train"
IMAGE_ROOT = Path(tempfile.gettempdir()) / "cafe_lab_images"


@dataclass
class ExploreView:
    """Everything the Explore tab shows for one analysis."""

    gallery: list[tuple[Any, str]]
    headline: str
    probabilities: Any
    channels: Any
    summary: str
    table: dict[str, Any]
    numbers: dict[str, Any]
    steps: list[tuple[Any, str]]
    last: dict[str, Any]

    def outputs(self) -> tuple:
        """The fields in order (the app's Explore outputs)."""
        return tuple(getattr(self, f.name) for f in fields(self))


@dataclass
class AppContext:
    """The app's long-lived state: checkpoint sets, worker pool (with its result cache), gallery."""

    default: Path
    pool: AnalysisPool
    examples: list[Path]
    labs: dict[str, Lab] = field(default_factory=dict)
    sets: dict[str, Path] = field(default_factory=dict)
    upload_roots: list[Path] = field(default_factory=list)
    example_labels: dict[str, int] = field(default_factory=dict)  # sha256 of a gallery file -> class
    manifest: dict[str, Any] | None = None  # the gallery's manifest.json, read once at start-up

    @classmethod
    def create(cls, checkpoints: str | Path | None = None, workers: int = 2,
               example_dir: Path = EXAMPLE_DIR) -> "AppContext":
        default = checkpoint_dir(checkpoints)
        manifest = read_manifest(example_dir)
        if manifest is not None:  # the gallery in the manifest's order (by class)
            examples = [example_dir / e["file"] for e in manifest["examples"] if (example_dir / e["file"]).is_file()]
        else:
            examples = sorted(example_dir.glob("*.png"))
        ctx = cls(default, AnalysisPool(workers), examples, upload_roots=[example_dir.resolve()], manifest=manifest)
        ctx.labs[str(default)] = Lab(default)
        ctx.sets = {p.name: p for p in checkpoint_sets(extra=default)}
        ctx.example_labels = {hashlib.sha256(p.read_bytes()).hexdigest(): int(p.name.split("_", 1)[0])
                       for p in examples if p.name.split("_", 1)[0].isdigit()}
        return ctx

    @property
    def first(self) -> Lab:
        return self.labs[str(self.default)]

    @property
    def default_set(self) -> str:
        return self.default.name

    def lab(self, set_name: str | None) -> Lab:
        folder = self.sets.get(set_name or self.default_set)
        if folder is None:
            raise UserError(f"Unknown checkpoint set {set_name!r}; available: {', '.join(self.sets)}")
        if str(folder) not in self.labs:
            try:
                self.labs[str(folder)] = Lab(folder)
            except CheckpointError as err:
                raise UserError(f"Cannot load checkpoint set {set_name}: {err}") from None
        return self.labs[str(folder)]

    def example_label(self, path: str | Path) -> int | None:
        """True class of an image if it is one of the gallery's test images (matched by content,
        because the app hands handlers a cached copy), else None."""
        return self.example_labels.get(hashlib.sha256(Path(path).read_bytes()).hexdigest())

    def upload_path(self, image: dict | str | None) -> Path:
        """The file behind an image value, only if it lies in an upload folder or the gallery
        (an API caller must not make the server read arbitrary paths)."""
        path = image.get("path") if isinstance(image, dict) else image
        if not path:
            raise UserError("Upload an image or pick an example first.")
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in self.upload_roots):
            raise UserError("That file is not an upload of this session.")
        return resolved

    def prepared(self, image: dict | str | None, lab: Lab, auto_negate: bool = True
                 ) -> tuple[PreparedImage, int | None]:
        path = self.upload_path(image)
        try:
            return lab.prepare(path, bool(auto_negate)), self.example_label(path)
        except ImageInputError as err:
            raise UserError(str(err)) from None


def start_up(ctx: AppContext) -> ExploreView | None:
    """Start every worker and load the default set in it, analyse the first gallery example (the
    first screen, returned) and the others in the background, so visitors meet a warm, cached app."""
    if ctx.examples:
        lab = ctx.first
        ctx.pool.warm_up(lab.folder, lab.prepare(ctx.examples[0]).tensor)
    first = example_view(ctx, 0)
    prefill_gallery(ctx)
    return first


def picture_files(items: list[tuple[np.ndarray, str]]) -> list[tuple[str, str]]:
    """(PNG path, caption) for (image array, caption) pairs: each picture written once, atomically,
    under a name from its content.

    Why not hand gradio the arrays: it re-encodes each one into a content-addressed cache file by
    truncating and rewriting it, so two answers with the same picture (cached answers, a class
    clicking the same example) can serve a half-written file. A file that exists is never rewritten.
    """
    IMAGE_ROOT.mkdir(parents=True, exist_ok=True)
    out = []
    for array, caption in items:
        data = np.ascontiguousarray(array)
        path = IMAGE_ROOT / f"{hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()[:32]}.png"
        if not path.is_file():
            atomic_write(path, lambda tmp, data=data: Image.fromarray(data).save(tmp, format="PNG"))
        out.append((str(path), caption))
    return out


def network_choices(lab: Lab) -> list[tuple[str, str]]:
    """(plain name, checkpoint stem) of the networks Explore can attack."""
    return [(network_name(n), n) for n in lab.networks()]


def model_choices(lab: Lab) -> list[tuple[str, str]]:
    """(plain name, checkpoint stem) of every network of the set (classify, attributions, evaluate)."""
    return [(network_name(n), n) for n in lab.model_names()]


def describe(ctx: AppContext, set_name: str | None) -> str:
    return set_description(ctx.lab(set_name).describe())


def step_pictures(prepared: PreparedImage) -> list[tuple[str, str]]:
    """One before | after thumbnail per conversion step, captioned with what the step did."""
    items = []
    for step in prepared.steps:
        before, after = step.before, step.after
        height = max(before.shape[0], after.shape[0])
        pad = [np.pad(a, ((0, height - a.shape[0]), (0, 0), (0, 0)), constant_values=255) for a in (before, after)]
        gap = np.full((height, 8, 3), 255, np.uint8)
        items.append((np.concatenate([pad[0], gap, pad[1]], axis=1), f"{step.name}: {step.description}"))
    return picture_files(items)


def _view(lab: Lab, result, rows, prepared: PreparedImage | None = None) -> ExploreView:
    numbers = result.to_json()
    ood = lab.ood_check(prepared.tensor) if prepared else None
    numbers["ood"] = ood
    warning = ood_warning(ood, lab.class_names)
    headline = explore_headline(result, rows)
    notes = prepared.notes if prepared else ()
    return ExploreView(picture_files(gallery_items(result)), f"{warning}  \n{headline}" if warning else headline,
                       probability_bars(result), channel_bars(result), explore_summary(result, notes),
                       {"headers": TABLE_HEADERS, "data": defense_table(rows, lab.class_names)}, numbers,
                       step_pictures(prepared) if prepared else [],
                       {"result": result, "rows": rows, "folder": str(lab.folder)})


def run_explore(ctx: AppContext, set_name: str | None, image: Any, network: str, attack: Any, eps_255: Any,
                steps: Any, seed: Any, target: Any, use_trained: bool = False,
                trained: str | None = None, auto_negate: bool = True) -> ExploreView:
    """Attack the image, estimate its causal features, invert them, attack every network.

    ``use_trained``: analyse with the h and g trained in the Train tab (file ``trained``).
    ``auto_negate``: negate a photo's light background (as Fashion-MNIST was made)."""
    lab = ctx.lab(set_name)
    settings = explore_settings(attack, eps_255, steps, seed, target, lab.class_names)
    if network not in lab.networks():
        raise UserError(f"Unknown network {network!r}; choose one of {', '.join(lab.networks())}")
    prepared, true_label = ctx.prepared(image, lab, auto_negate)
    bundle_path = None
    if use_trained:
        if not trained:
            raise UserError("Train h and g in the Train tab first (or untick 'use my trained h/g').")
        path = Path(trained).resolve()
        if not path.is_relative_to(TRAIN_ROOT.resolve()) or not path.is_file():
            raise UserError("That trained checkpoint is not available any more.")
        if network != "adv":
            raise UserError("Your trained h and g belong to the robust network: attack that one, or untick "
                            "'use my trained h/g'.")
        bundle_path = path
    try:
        result, rows = ctx.pool.comparison(lab.folder, prepared.tensor, true_label, bundle_path, network=network,
                                           **settings)
    except (ValueError, CheckpointError, WorkerStopped) as err:
        raise UserError(str(err)) from None
    return _view(lab, result, rows, prepared)


def example_view(ctx: AppContext, index: int = 0) -> ExploreView | None:
    """The default analysis of gallery example ``index`` (the first screen), None without a gallery."""
    if not ctx.examples or ctx.first.bundle is None:
        return None
    lab = ctx.first
    path = ctx.examples[min(index, len(ctx.examples) - 1)]
    prepared = lab.prepare(path)
    result, rows = ctx.pool.comparison(lab.folder, prepared.tensor, ctx.example_label(path),
                                       network="adv", **explore_defaults(lab.adv.card["eps"]))
    return _view(lab, result, rows, prepared)


def prefill_gallery(ctx: AppContext) -> threading.Thread:
    """Analyse every gallery example at the default settings in the background, so a class
    clicking through the gallery is answered from the cache."""
    def work() -> None:
        for index in range(len(ctx.examples)):
            try:
                example_view(ctx, index)
            except (UserError, WorkerStopped, CheckpointError, ValueError, RuntimeError):
                return  # the app keeps working (or is shutting down); requests are computed when asked

    thread = threading.Thread(target=work, name="gallery-prefill", daemon=True)
    thread.start()
    return thread


def cache_stats(ctx: AppContext) -> dict:
    """Hits, misses and entries of the result cache (for load tests and operators)."""
    cache = ctx.pool.cache
    if cache is None:
        return {"hits": 0, "misses": 0, "entries": 0}
    return {"hits": cache.hits, "misses": cache.misses, "entries": len(cache)}


def make_report(last: dict[str, Any] | None) -> list[str]:
    """The report files (PNG panel + JSON) of the last Explore run."""
    if not last:
        raise UserError("Run an attack first: the report describes its result.")
    report = build_report(last["result"], last["rows"], last["folder"])
    REPORT_ROOT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="report_", dir=REPORT_ROOT))
    json_path, png_path = write_report(report, report_png(last["result"], last["rows"]), folder)
    return [str(png_path), str(json_path)]


def run_attributions(ctx: AppContext, set_name: str | None, model_name: str | None,
                     last: dict[str, Any] | None) -> list[tuple[Any, str]]:
    """captum IG and Saliency on the clean, adversarial and inverted images of the last run."""
    if not last:
        raise UserError("Run an attack first: attributions explain its images.")
    lab = ctx.lab(set_name)
    result = last["result"]
    try:
        attr = lab.attributions(result, model_name or "adv")
    except KeyError as err:
        raise UserError(str(err)) from None
    target = lab.class_names[attr.target]
    keys = [k for k in ("clean", "adversarial", "inverted") if k in attr.overlays["saliency"]]
    return picture_files([(attr.overlays[method][key], f"{title}, {key} image, toward {target}")
                          for method, title in (("integrated_gradients", "IG"), ("saliency", "Saliency")) for key in keys])


def classify_upload(ctx: AppContext, set_name: str | None, model_name: str | None, image: Any,
                    auto_negate: bool = True) -> tuple[dict[str, float], Any, str, list, dict]:
    """Class probabilities of one network, the model input, the conversion steps (text and
    before/after pictures) with the out-of-distribution warning, and ``{"ood": check}``."""
    lab = ctx.lab(set_name)
    prepared, _ = ctx.prepared(image, lab, auto_negate)
    try:
        net = lab.model(model_name or "adv")
    except KeyError as err:
        raise UserError(str(err)) from None
    result = classify(LoadedModel(net, lab.adv.card, lab.adv.info), prepared.tensor)
    ood = lab.ood_check(prepared.tensor)
    warning = ood_warning(ood, lab.class_names)
    notes = preprocessing_notes(prepared.steps, prepared.notes)
    return (result.probabilities, prepared.preview, f"{warning}\n\n{notes}" if warning else notes,
            step_pictures(prepared), {"ood": ood})


def show_robustness(ctx: AppContext, set_name: str | None) -> tuple[dict[str, Any], Any, str]:
    """The set's robustness table, eps curves and the claim / control sentences."""
    result = ctx.lab(set_name).robustness()
    if result is None:
        return ({"headers": ["network"], "data": []}, robustness_curves({}),
                "No robustness results for this checkpoint set yet: run "
                "`python -m cafe_core evaluate --grid <config>`.")
    headers, rows = robustness_rows(result)
    return {"headers": headers, "data": rows}, robustness_curves(result), robustness_text(result, claim_check(result["rows"]))


def evaluate_now(ctx: AppContext, set_name: str | None, model_name: str | None, attack: Any, eps_255: Any,
                 steps: Any, n: Any, on_batch=None) -> tuple[str, dict[str, Any]]:
    """Accuracy of one network under one attack on the first n test images."""
    lab = ctx.lab(set_name)
    attack = checked_attack(attack, extra=("clean",))
    eps = checked_number(eps_255, 0, MAX_EPS_255, "eps (/255)") / 255
    steps = int(checked_number(steps, 1, MAX_STEPS, "steps"))
    n = int(checked_number(n, 1, MAX_EVAL_IMAGES, "images"))
    try:
        out = lab.evaluate_now(model_name or "adv", attack, n, eps, steps, on_batch=on_batch)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(str(err)) from None
    return (f"**{network_name(out['model'])}** under **{attack}** (eps {255 * out['eps']:.1f}/255, {steps} steps, "
            f"seed 0) on the first {out['n_images']} test images: **{100 * out['accuracy']:.1f}%**"), out


def lesson_example(ctx: AppContext) -> Path:
    """The lesson's image, by the manifest (cafe_core.serving.gallery.lesson_example)."""
    example = gallery_lesson_example(ctx.examples, ctx.manifest)
    if example is None:
        raise UserError("The example gallery is missing (assets/examples).")
    return example


def show_lesson(ctx: AppContext, step: str, set_name: str | None) -> tuple[str, list[tuple[Any, str]]]:
    """One step of the guided lesson, written from the lesson example's own analysis."""
    if step not in LESSON_TITLES:
        raise UserError(f"Unknown lesson step {step!r}")
    lab = ctx.lab(set_name)
    example = lesson_example(ctx)
    prepared = lab.prepare(example)
    try:
        result, rows = ctx.pool.comparison(lab.folder, prepared.tensor, ctx.example_label(example), network="adv",
                                           **explore_defaults(lab.adv.card["eps"]))
    except WorkerStopped as err:
        raise UserError(str(err)) from None
    text = lesson_step(LESSON_TITLES.index(step), result, rows, lab.robustness())
    return text, picture_files(gallery_items(result))


def run_training(ctx: AppContext, set_name: str | None, images: Any, epochs: Any) -> Iterator[tuple]:
    """Train h and g on the robust network live: yields (status, loss figure, accuracy figure, path)."""
    lab = ctx.lab(set_name)
    try:
        images, epochs = check_budget(images, epochs)
    except ValueError as err:
        raise UserError(str(err)) from None
    config = lab.adv.card.get("config_name")
    if not config:
        raise UserError("This checkpoint set does not name the recipe it was trained with.")
    TRAIN_ROOT.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="amr_", dir=TRAIN_ROOT))
    yield f"training h and g on {images} images for {epochs} epochs...", *training_curves([]), None
    run = None
    for run in train_amr_live(lab.folder / "adv.safetensors", config, images, epochs, out):
        if run.error:
            raise UserError(f"training failed: {run.error}")
        losses, accs = training_curves(run.records)
        done = run.done and run.out.is_file()
        status = f"epoch {len(run.records)}/{epochs}" + (" - done: tick 'use my trained h/g' in Explore" if done else "")
        yield status, losses, accs, (str(run.out) if done else None)
    if run is None or not run.out.is_file():
        raise UserError("training stopped before writing a checkpoint")
