"""Feature inversion for pictures (method.md section 4, paper Fig. 3).

Optimise an image so that f(image) matches a target feature map (F_n, F_a, F_n + h(Z),
F_n + g(Z)), with a total-variation prior and random jitter, and label each picture with
c(target). Every target shares the same start, steps, prior and seed, so the pictures differ
only because their targets differ.

Hand-written because neither captum nor torchattacks has feature-matching inversion (captum
attributes predictions to inputs; it cannot optimise an image towards a given feature map);
torch.optim.Adam does the optimisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import image_to_uint8
from ..io.serialization import atomic_write
from .predictions import CausalView

FIG3_COLUMNS = {"natural": "Natural", "adversarial": "Adversarial", "causal": "Causal (AC)",
                "counterfactual": "Counterfactual (CF)"}
# Chosen on Fashion-MNIST lite (200 steps, grey start): 0.2 keeps the pictures' total variation
# near that of real images (0.1-0.27) and even lowers the final feature distance; 0 gives
# high-frequency noise, 0.5 and above start to wash out details. TV is a per-pixel mean, so the
# weight does not depend on the image size.
DEFAULT_TV_WEIGHT = 0.2


@dataclass(frozen=True)
class FeatureInversion:
    """Result of :func:`feature_inversion`, keyed by target name.

    Attributes:
        images: name -> (N, C, H, W) inverted images in [0, 1].
        labels: name -> (N,) argmax of c(target), the label of the *target* feature (Fig. 3).
        initial_distance: name -> (N,) relative feature distance of the start image.
        final_distance: name -> (N,) relative feature distance of the inverted image.
    """
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    initial_distance: dict[str, torch.Tensor]
    final_distance: dict[str, torch.Tensor]


def make_start(shape: Sequence[int], seed: int = 0, noise: float = 0.02,
               device: torch.device | str | None = None, level: float = 0.5) -> torch.Tensor:
    """Uniform grey ``level`` plus small seeded Gaussian noise (breaks the symmetry of a flat image).

    Args:
        shape: (N, C, H, W).
        seed: seed of a private generator (the global RNG is untouched).
        noise: standard deviation of the noise.

    Returns:
        (N, C, H, W) float32 tensor in [0, 1].
    """
    gen = torch.Generator().manual_seed(seed)
    start = level + noise * torch.randn(tuple(shape), generator=gen)
    return start.clamp_(0, 1).to(device)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per-sample anisotropic L1 total variation (mean absolute neighbour difference), (N,)."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def relative_distance(feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||feature - target||^2 / ||target||^2, (N,)."""
    err = (feature - target).flatten(1).pow(2).sum(1)
    return err / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)  # an all-zero target is legal


def feature_inversion(backbone: nn.Module, targets: dict[str, torch.Tensor], start: torch.Tensor,
                      steps: int = 200, lr: float = 0.05, tv_weight: float = DEFAULT_TV_WEIGHT,
                      jitter: int = 1, seed: int = 0, resolution: int | None = None) -> FeatureInversion:
    """Invert each target feature map into an image (paper Fig. 3).

    Loss per sample: ||f(x) - T||^2 / ||T||^2 + tv_weight * TV(x), with f applied to x rolled
    by a seeded random shift of up to ``jitter`` pixels each step. Adam on the pixels, clamped
    to [0, 1] after each step (so ``steps=0`` returns the start exactly).

    With ``resolution`` r, Adam optimises an r x r image that is bilinearly upsampled to the
    input size: a coarse parameterisation that reaches a recognisable picture in far fewer
    steps (measured by benchmarks/inversion_quality.py), at the cost of fine detail. The start
    is then area-downsampled to r x r, so ``steps=0`` returns its upsampled coarse version.

    Args:
        backbone: a Backbone with ``features`` (f) and ``head`` (c); put in eval mode during the
            call and restored afterwards; its parameters get no gradients.
        targets: name -> (N, C, h, w) target features, e.g. from :func:`fig3_targets`.
        start: (N, C_in, H, W) start image in [0, 1], shared by every target
            (:func:`make_start` or the clean image).
        steps: Adam steps.
        lr: Adam learning rate (pixel units).
        tv_weight: weight of the total-variation prior.
        jitter: maximum random shift in pixels (0 disables jitter).
        seed: seed of the jitter shifts.
        resolution: side of the optimised coarse image (None: optimise the pixels themselves).

    Returns:
        FeatureInversion with images, target labels and distances before/after.
    """
    if not targets:
        raise ValueError("need at least one target feature")
    if steps < 0 or lr <= 0 or tv_weight < 0 or jitter < 0 or (resolution is not None and resolution < 1):
        raise ValueError(f"need steps >= 0, lr > 0, tv_weight >= 0, jitter >= 0, resolution >= 1; "
                         f"got {steps}, {lr}, {tv_weight}, {jitter}, {resolution}")
    if start.ndim != 4 or not torch.isfinite(start).all() or start.min() < 0 or start.max() > 1:
        raise ValueError(f"start must be a finite (N, C, H, W) image in [0, 1], got shape {tuple(start.shape)}")
    names = list(targets)
    n = start.shape[0]
    for name in names:
        if targets[name].ndim != 4 or targets[name].shape[0] != n:
            raise ValueError(f"target {name!r} must be (N={n}, C, h, w), got {tuple(targets[name].shape)}")
    start = start.detach().float()
    # All targets in one batch: Adam is elementwise and the per-sample losses are summed, so
    # this equals separate runs from the same start with the same jitter shifts, only faster.
    target = torch.cat([targets[k].detach().to(start.device, start.dtype) for k in names])
    x0 = start.repeat(len(names), 1, 1, 1)
    size = tuple(start.shape[2:])
    coarse = resolution is not None and (resolution, resolution) != size

    def render(param: torch.Tensor) -> torch.Tensor:
        if not coarse:
            return param
        return F.interpolate(param, size=size, mode="bilinear", align_corners=False)
    # Restore every submodule's own mode (backbone.train(mode) would flatten mixed modes).
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        with torch.no_grad():
            initial = relative_distance(backbone.features(x0), target)
            labels = backbone.head(target).argmax(1)
        param = F.adaptive_avg_pool2d(x0, resolution) if coarse else x0.clone()
        param.requires_grad_(True)
        optimizer = torch.optim.Adam([param], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            shift = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
            x = render(param)
            moved = torch.roll(x, shifts=shift, dims=(2, 3)) if jitter else x
            loss = (relative_distance(backbone.features(moved), target)
                    + tv_weight * total_variation(x)).sum()
            # Gradient w.r.t. the image only: backbone parameters never accumulate .grad.
            (param.grad,) = torch.autograd.grad(loss, [param])
            optimizer.step()
            with torch.no_grad():
                param.clamp_(0, 1)  # bilinear upsampling of [0, 1] values stays in [0, 1]
        with torch.no_grad():
            images = render(param.detach())
        with torch.no_grad():
            final = relative_distance(backbone.features(images), target)
    finally:
        for module, mode in modes:
            module.training = mode

    def split(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(names, t.split(n)))

    return FeatureInversion(split(images), split(labels), split(initial), split(final))


@dataclass(frozen=True)
class InversionSetting:
    """Everything that decides a feature inversion besides its targets: start, steps, prior.

    Every target of one call shares it, so pictures differ only because their targets differ.
    """

    steps: int
    lr: float
    resolution: int | None = None
    tv_weight: float = DEFAULT_TV_WEIGHT
    jitter: int = 1
    start_level: float = 0.5

    def invert(self, backbone: nn.Module, targets: dict[str, torch.Tensor], image_shape: Sequence[int],
               seed: int = 0, device: torch.device | str | None = None) -> FeatureInversion:
        """:func:`feature_inversion` of ``targets`` from :func:`make_start` (N, C, H, W = ``image_shape``)."""
        start = make_start(tuple(image_shape), seed=seed, device=device, level=self.start_level)
        return feature_inversion(backbone, targets, start, steps=self.steps, lr=self.lr, tv_weight=self.tv_weight,
                                 jitter=self.jitter, seed=seed, resolution=self.resolution)


# The project's two settings. The CLI's Fig. 3 grid can afford 200 pixel steps. The app must
# answer in about a second: 25 steps on a coarse 14x14 image from a black start (the dataset's
# background) read far better than 25 on the pixels from grey (corr with the clean image ~0.78
# vs ~0.38; benchmarks/results/inversion_quality.json compares them on 500 test images).
CLI_INVERSION = InversionSetting(steps=200, lr=0.05)
APP_INVERSION = InversionSetting(steps=25, lr=0.2, resolution=14, tv_weight=0.1, jitter=0, start_level=0.0)


def fig3_targets(view: CausalView) -> dict[str, torch.Tensor]:
    """The four Fig. 3 targets F_n, F_a = F_n + Z, F_n + h(Z), F_n + g(Z) of a causal view."""
    return {"natural": view.natural_feature.detach(),
            "adversarial": view.adversarial_feature.detach(),
            "causal": view.causal_feature.detach(),
            "counterfactual": view.counterfactual_feature.detach()}


def _show(ax, image: torch.Tensor) -> None:
    """Draw a (C, H, W) image without smoothing (28x28 pixels stay visible as blocks)."""
    pixels = image_to_uint8(image)
    if image.shape[0] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(pixels, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def fig3_grid(clean: torch.Tensor, inversions: FeatureInversion, true_labels: torch.Tensor | Sequence[int],
              class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a PNG grid like the paper's Fig. 3: Image | Natural | Adversarial | AC | CF.

    One row per image; each inverted cell is titled with c(target)'s class name, green when it
    equals the true label, red otherwise; the row label is the true class name.

    Args:
        clean: (N, C, H, W) clean images in [0, 1].
        inversions: result of :func:`feature_inversion` for the same N images.
        true_labels: (N,) true class indices.
        class_names: name of each class index.
        path: output PNG path (written atomically).
        title: optional figure title.

    Returns:
        The path written.
    """
    # Figure + Agg canvas instead of pyplot: no global backend switch or figure registry,
    # so this is safe from a web app's worker threads and never opens a window.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    truth = [int(t) for t in (true_labels.tolist() if torch.is_tensor(true_labels) else true_labels)]
    keys = [k for k in FIG3_COLUMNS if k in inversions.images]
    keys += [k for k in inversions.images if k not in FIG3_COLUMNS]
    n = clean.shape[0]
    if len(truth) != n or any(inversions.images[k].shape[0] != n for k in keys):
        raise ValueError(f"clean, true_labels and every inversion need the same N={n} images")

    def name(index: int) -> str:
        return class_names[index] if 0 <= index < len(class_names) else str(index)

    cols = 1 + len(keys)
    fig = Figure(figsize=(1.7 * cols, 1.8 * n + (0.5 if title else 0.2)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, cols, squeeze=False)
    for row in range(n):
        _show(axes[row][0], clean[row])
        axes[row][0].set_ylabel(name(truth[row]), fontsize=10)
        for col, key in enumerate(keys, start=1):
            ax = axes[row][col]
            _show(ax, inversions.images[key][row])
            pred = int(inversions.labels[key][row])
            ax.set_title(name(pred), fontsize=9, color="green" if pred == truth[row] else "red")
    for col, header in enumerate(["Image"] + [FIG3_COLUMNS.get(k, k) for k in keys]):
        axes[0][col].annotate(header, (0.5, 1.25), xycoords="axes fraction", ha="center",
                              va="bottom", fontsize=10, fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    # atomic_write's temp name ends in .tmp, so the format must be given explicitly.
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
