"""The causal analysis of one AMR-GMM checkpoint as a results file: the numbers of ``analysis.py``
on the test set, an optional eps_inv sweep, and the paper's Fig. 3-style picture, written as JSON +
markdown. ``python -m cafe_core analyze`` and the pipeline both call :func:`write_study`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attacks.registry import build_attack
from ..data.datasets import ImageTensors, load_split
from ..io.provenance import provenance, repo_relative
from ..io.reporting import causal_markdown
from ..io.serialization import atomic_write_text
from .analysis import AMRBundle, causal_analysis, default_eps_inv, load_amr
from .feature_inversion import feature_inversion, fig3_grid, fig3_targets, make_start
from .predictions import causal_view


@dataclass(frozen=True)
class StudySettings:
    """How the analysis runs (the ``analyze`` command's flags; the defaults are its defaults).

    Attributes:
        attack, steps, eps: the attack (eps None: the card's). eps_inv (None: the config's or the
            paper's table), inversion_steps: causal inversion. seed, batch_size: as everywhere.
        n: first N test images (None: all). sweep_eps_inv, sweep_n: eps_inv values measured on the
            first ``sweep_n`` images. figure_n: images in the Fig. 3-style picture (0: none);
            figure_select: ``"fooled"`` (the first the attack fools, as the paper's) or ``"first"``.
    """

    attack: str = "pgd"
    steps: int = 20
    eps: float | None = None
    eps_inv: float | None = None
    inversion_steps: int = 3
    seed: int = 0
    batch_size: int = 500
    n: int | None = None
    sweep_eps_inv: tuple[float, ...] = ()
    sweep_n: int = 1000
    figure_n: int = 6
    figure_select: str = "fooled"


def default_out(bundle: AMRBundle) -> Path:
    """``benchmarks/results/causal_<config>.json``."""
    return Path(f"benchmarks/results/causal_{bundle.card.get('config_name') or 'model'}.json")


def figure_path(out: Path) -> Path:
    return out.with_name(out.stem + "_fig3.png")


def fig3_figure(bundle: AMRBundle, test: ImageTensors, settings: StudySettings, path: Path,
                device: str | torch.device = "cpu") -> Path:
    """Fig. 3-style grid for ``settings.figure_n`` test images: by default the first ones the attack
    fools (correct when clean, wrong when attacked), as in the paper's figure."""
    card = bundle.card
    eps = card["eps"] if settings.eps is None else settings.eps
    attacker = build_attack(settings.attack, bundle.backbone, eps, settings.steps, settings.seed,
                            bundle.backbone.num_classes)
    pool = test[list(range(min(len(test), 50 * settings.figure_n)))]
    images, labels = pool[0].to(device), pool[1].to(device)
    torch.manual_seed(settings.seed)
    adversarial = attacker(images, labels)
    with torch.no_grad():
        fooled = (bundle.backbone(images).argmax(1) == labels) & (bundle.backbone(adversarial).argmax(1) != labels)
    chosen = fooled.nonzero().flatten() if settings.figure_select == "fooled" else torch.arange(len(labels))
    chosen = chosen[: settings.figure_n]
    images, labels, adversarial = images[chosen], labels[chosen], adversarial[chosen]
    view = causal_view(bundle.backbone, bundle.causal_estimator, bundle.counterfactual_generator, images, adversarial)
    # Same grey start for every column, so each picture shows what its feature alone encodes.
    start = make_start(tuple(images.shape), seed=settings.seed, device=images.device)
    inversions = feature_inversion(bundle.backbone, fig3_targets(view), start, seed=settings.seed)
    what = "images the attack fools" if settings.figure_select == "fooled" else "first test images"
    return fig3_grid(images, inversions, labels, test.class_names, path,
                     title=f"{card['dataset']} {card['backbone']}: feature inversions under "
                           f"{settings.attack}-{settings.steps} ({what})")


def _test_split(bundle: AMRBundle, n: int | None, data_root: str | None) -> ImageTensors:
    # The test split is the dataset's own: the validation size and seed only split the training set.
    return load_split(bundle.card["dataset"], "test", data_root, limit=n)


def write_study(amr: str | Path, settings: StudySettings = StudySettings(), *, out: str | Path | None = None,
                device: str | torch.device = "cpu", data_root: str | None = None, progress: bool = True,
                command: str | None = None) -> tuple[dict[str, Any], Path]:
    """Analyse the AMR-GMM checkpoint ``amr`` and write ``out`` (JSON), its markdown and its figure.

    Returns the result and the JSON's path. ``command``: the reproducing command to record."""
    bundle = load_amr(amr, device)
    card = bundle.card
    test = _test_split(bundle, settings.n, data_root)
    eps_inv = settings.eps_inv if settings.eps_inv is not None else default_eps_inv(card)
    common = dict(attack=settings.attack, eps=settings.eps, steps=settings.steps,
                  inversion_steps=settings.inversion_steps, seed=settings.seed, batch_size=settings.batch_size,
                  device=device, progress=progress)
    started = time.perf_counter()
    sweep = []
    for value in settings.sweep_eps_inv:
        part = causal_analysis(bundle, test.subset(torch.arange(min(settings.sweep_n, len(test)))), eps_inv=value,
                               **common)
        sweep.append({"eps_inv": value, "kl_x1000": part["kl_x1000"], "inverted_accuracy": part["accuracy"]["inverted"],
                      "h_zero_kl_x1000": part["controls"]["h_zero"]["kl_x1000"], "n_images": part["n_images"]})
    result = causal_analysis(bundle, test, eps_inv=eps_inv, **common)
    result.update({"eps_inv_sweep": sweep, "checkpoint": repo_relative(amr), "sha256": card["sha256"],
                   "parent": card["parent"], "dataset": card["dataset"], "backbone": card["backbone"],
                   "split": "test", "seconds": round(time.perf_counter() - started, 1), **provenance(command)})
    out = Path(out or default_out(bundle))
    if settings.figure_n > 0:
        result["figure"] = str(fig3_figure(bundle, test, settings, figure_path(out), device))
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), causal_markdown(result) + "\n")
    return result, out


def write_figure_only(amr: str | Path, settings: StudySettings = StudySettings(), *, out: str | Path | None = None,
                      device: str | torch.device = "cpu", data_root: str | None = None,
                      command: str | None = None) -> Path:
    """(Re)draw only the Fig. 3-style picture beside ``out``, and record in ``out`` how it was made."""
    bundle = load_amr(amr, device)
    out = Path(out or default_out(bundle))
    figure = fig3_figure(bundle, _test_split(bundle, settings.n, data_root), settings, figure_path(out), device)
    if out.is_file():
        saved = json.loads(out.read_text())
        saved.update(figure=str(figure), figure_command=provenance(command)["command"])
        atomic_write_text(out, json.dumps(saved, indent=2) + "\n")
    return figure
