"""Out-of-distribution score: does an input look like the training data, to the network itself?

The feature is the backbone's own f(x), global-average pooled (128 numbers for ``lite``). Fitted on
the training split (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
samples"): class means and one shared ("tied") covariance, plus each class's own covariance
(shrunk 10% towards the shared one). For an input the detector computes

* ``tied``: min over classes of the Mahalanobis distance to the class mean (shared covariance);
* ``class``: min over classes of the squared Mahalanobis distance under that class's own
  covariance plus its log-determinant (the class-conditional Gaussian's -2 log-likelihood, up to
  a constant);

puts each on the same scale with the validation split's median and 95th percentile,
``z = (d - median) / (p95 - median)``, and scores ``z_tied + z_class``. The tied distance alone
misses small garments (Fashion-MNIST shrunk into MNIST's 20x20 box: AUROC 0.93); the class
covariances catch them (0.97) but miss more photos; the sum keeps both (benchmarks/ood.py has the
measurements). The threshold is the validation score that ``pass_rate`` (95%) of the validation
images do not exceed; an input above it is flagged.

Stored with the checkpoint set as ``ood.safetensors`` + ``ood.json`` (the card names its parent
backbone and that file's sha256; loading refuses another backbone). Fit one with
``python -m cafe_core ood --config fashion_lite``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io.checkpoints import CheckpointError, load_backbone, load_checkpoint, save_checkpoint
from ..io.serialization import sha256_file

OOD_FILE = "ood.safetensors"
PARENT_FILE = "adv.safetensors"  # the set's ADV backbone, which the app analyses
PASS_RATE = 0.95
SHRINKAGE = 0.1  # per-class covariance = 0.9 * own + 0.1 * shared: stable with few images per class
RIDGE = 1e-6  # added to the shared covariance's diagonal, relative to its mean variance
METHOD = "mahalanobis-tied+class"


class _Stats(nn.Module):
    """The fitted statistics as buffers, so ``save_checkpoint`` stores them like any weights."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor, class_precisions: torch.Tensor,
                 class_logdets: torch.Tensor, scales: torch.Tensor, threshold: torch.Tensor) -> None:
        super().__init__()
        for name, value in (("means", means), ("precision", precision), ("class_precisions", class_precisions),
                            ("class_logdets", class_logdets), ("scales", scales), ("threshold", threshold)):
            self.register_buffer(name, value.detach().to("cpu", torch.float64).contiguous())


@dataclass
class OODDetector:
    """Scores images by how far the backbone's pooled features lie from the training data's.

    Attributes:
        backbone: the network whose ``features()`` are scored (eval mode).
        means: (K, D) class means of the pooled features.
        precision: (D, D) inverse of the shared covariance.
        class_precisions: (K, D, D) inverses of the per-class (shrunk) covariances.
        class_logdets: (K,) log-determinants of those covariances.
        scales: (4,) validation median and (p95 - median) of the tied and of the class score.
        threshold: inputs scoring above it are flagged.
        card: the JSON card (empty until saved or loaded).
    """
    backbone: nn.Module
    means: torch.Tensor
    precision: torch.Tensor
    class_precisions: torch.Tensor
    class_logdets: torch.Tensor
    scales: torch.Tensor
    threshold: float
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One memory layout for a fitted and a loaded detector: einsum picks its kernel (and so its
        # float summation order) by the strides, and a score must not depend on where it came from.
        for name in ("means", "precision", "class_precisions", "class_logdets", "scales"):
            setattr(self, name, getattr(self, name).contiguous())

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Pooled f(x): images (N, C, H, W) in [0, 1] -> (N, D) float64 on the CPU."""
        device = next(self.backbone.parameters()).device
        out = [self.backbone.features(images[i:i + batch_size].to(device, torch.float32)).mean(dim=(2, 3))
               for i in range(0, len(images), batch_size)]
        return torch.cat(out).to("cpu", torch.float64)

    def distances(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two raw scores of (N, D) pooled features: ``tied`` (Mahalanobis distance to the nearest
        class mean, shared covariance) and ``class`` (min over classes of the squared distance under
        the class's own covariance plus its log-determinant)."""
        diff = feats[:, None, :] - self.means[None]  # (N, K, D)
        tied = torch.einsum("nkd,de,nke->nk", diff, self.precision, diff).clamp_min(0).min(dim=1).values.sqrt()
        own = torch.einsum("nkd,kde,nke->nk", diff, self.class_precisions, diff) + self.class_logdets[None]
        return {"tied": tied, "class": own.min(dim=1).values}

    def combine(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        """The score from ``distances()``: the sum of the two, each standardised on the validation split."""
        s = self.scales
        return (raw["tied"] - s[0]) / s[1] + (raw["class"] - s[2]) / s[3]

    def score(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N,) float64 scores of images (N, C, H, W) in [0, 1]; higher = less like the training data."""
        return self.combine(self.distances(self.features(images, batch_size)))

    def check(self, image: torch.Tensor) -> dict[str, Any]:
        """One image, (C, H, W) or (1, C, H, W) in [0, 1] -> ``{"score", "threshold", "flagged"}``
        as plain Python values."""
        batch = image.unsqueeze(0) if image.ndim == 3 else image
        if batch.ndim != 4 or len(batch) != 1:
            raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
        value = float(self.score(batch)[0])
        return {"score": value, "threshold": float(self.threshold), "flagged": bool(value > self.threshold)}


def _threshold(scores: torch.Tensor, pass_rate: float) -> float:
    """The smallest value that ceil(pass_rate * n) of the scores do not exceed."""
    ordered = scores.sort().values
    return float(ordered[max(0, math.ceil(pass_rate * len(ordered)) - 1)])


def _scale(values: torch.Tensor) -> tuple[float, float]:
    median = float(values.median())
    spread = _threshold(values, 0.95) - median
    return median, spread if spread > 0 else 1.0


def fit_ood(backbone: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
            pass_rate: float = PASS_RATE, batch_size: int = 500) -> OODDetector:
    """Fit the class Gaussians on training images and fix the threshold on validation images.

    Args:
        backbone: eval-mode backbone with ``features()``.
        train_images, val_images: (N, C, H, W) uint8 (0-255) or float in [0, 1].
        train_labels: (N,) class indices; every class needs at least one image.
        pass_rate: fraction of validation images that must pass (score <= threshold).
    """
    if not 0 < pass_rate <= 1:
        raise ValueError(f"pass_rate must be in (0, 1], got {pass_rate}")
    to_float = lambda x: x.float().div(255) if x.dtype == torch.uint8 else x  # noqa: E731
    backbone.eval()
    probe = OODDetector(backbone, *(torch.empty(0),) * 5, threshold=0.0)
    feats = probe.features(to_float(train_images), batch_size)
    labels = train_labels.long().cpu()
    classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=classes)
    if (counts == 0).any():
        raise ValueError(f"classes {counts.eq(0).nonzero().flatten().tolist()} have no training images")
    dim = feats.shape[1]
    means = torch.zeros(classes, dim, dtype=torch.float64).index_add_(0, labels, feats) / counts[:, None]
    centred = feats - means[labels]
    shared = centred.T @ centred / len(feats)
    shared += RIDGE * shared.diagonal().mean() * torch.eye(dim, dtype=torch.float64)
    own = torch.stack([centred[labels == k].T @ centred[labels == k] / counts[k] for k in range(classes)])
    own = (1 - SHRINKAGE) * own + SHRINKAGE * shared
    detector = OODDetector(backbone, means, torch.linalg.inv(shared), torch.linalg.inv(own),
                           torch.linalg.slogdet(own).logabsdet, torch.zeros(4, dtype=torch.float64), 0.0)
    raw = detector.distances(detector.features(to_float(val_images), batch_size))
    detector.scales = torch.tensor([*_scale(raw["tied"]), *_scale(raw["class"])], dtype=torch.float64)
    detector.threshold = _threshold(detector.combine(raw), pass_rate)
    return detector


def save_ood(detector: OODDetector, path: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``detector``'s statistics to ``path`` (.safetensors) and its card beside it; returns the card.

    ``card`` must name the parent backbone: ``{"parent": {"path", "sha256", ...}, "dataset", "backbone"}``.
    """
    if "sha256" not in card.get("parent", {}):
        raise ValueError("the card must name its parent backbone with its sha256")
    stats = _Stats(detector.means, detector.precision, detector.class_precisions, detector.class_logdets,
                   detector.scales, torch.tensor(detector.threshold, dtype=torch.float64))
    card = dict(card, stage="ood", method=METHOD, threshold=detector.threshold)
    detector.card = save_checkpoint(path, {"ood": stats}, card)
    return detector.card


def load_ood(folder: str | Path, backbone: nn.Module | None = None, device: str | torch.device = "cpu"
             ) -> OODDetector | None:
    """The checkpoint set's detector, or None when ``folder`` has no ``ood.safetensors``.

    Args:
        backbone: the set's ADV backbone if already loaded (else it is loaded from the parent file).
    Raises:
        CheckpointError: the file or card is damaged, or the detector was fitted on another backbone
            than the set's ``adv.safetensors`` (sha256 differs from the card's parent).
    """
    folder = Path(folder)
    path = folder / OOD_FILE
    if not path.is_file():
        return None
    states, card = load_checkpoint(path, {"stage": "ood"})
    parent_card = card.get("parent") or {}
    parent = folder / Path(parent_card.get("path", PARENT_FILE)).name
    if not parent.is_file():
        raise CheckpointError(f"{OOD_FILE}: its backbone {parent.name} is missing from {folder}")
    if sha256_file(parent) != parent_card.get("sha256"):
        raise CheckpointError(f"{OOD_FILE} was fitted on another {parent.name} (sha256 "
                              f"{str(parent_card.get('sha256'))[:12]}..., the file is {sha256_file(parent)[:12]}...): "
                              f"refit it with python -m cafe_core ood")
    stats = states.get("ood", {})
    missing = {"means", "precision", "class_precisions", "class_logdets", "scales", "threshold"} - set(stats)
    if missing:
        raise CheckpointError(f"{OOD_FILE} lacks {sorted(missing)}")
    if backbone is None:
        backbone, _ = load_backbone(parent, device=device)
    return OODDetector(backbone.eval(), stats["means"], stats["precision"], stats["class_precisions"],
                       stats["class_logdets"], stats["scales"], float(stats["threshold"]), card)


def fit_checkpoint_set(config: dict[str, Any], parent: str | Path | None = None, out: str | Path | None = None,
                       limit: int | None = None, data_root: str | Path | None = None,
                       device: str | torch.device = "cpu", command: str = "") -> dict[str, Any]:
    """Fit on the config's training split (all of it, or the first ``limit`` images of the training
    and of the validation split), fix the threshold on its validation split, and write
    ``<checkpoint_dir>/ood.safetensors`` + card. Returns the card."""
    from ..data.datasets import load_split
    from ..io.checkpoints import parent_record

    folder = Path(config["checkpoint_dir"])
    parent = Path(parent) if parent else folder / PARENT_FILE
    out = Path(out) if out else folder / OOD_FILE
    started = time.perf_counter()
    backbone, parent_card = load_backbone(parent, device=device)
    split = dict(n_val=config["n_val"], seed=config["seed"], download=False, limit=limit)
    train = load_split(config["dataset"], "train", data_root, **split)
    val = load_split(config["dataset"], "val", data_root, **split)
    detector = fit_ood(backbone, train.images, train.labels, val.images, PASS_RATE)
    passed = float((detector.score(val.images.float().div(255)) <= detector.threshold).double().mean())
    seconds = round(time.perf_counter() - started, 1)
    card = {"dataset": parent_card["dataset"], "backbone": parent_card["backbone"], "seed": config["seed"],
            "config_name": config.get("name"), "parent": parent_record(parent, parent_card), "command": command,
            "config": {"pass_rate": PASS_RATE, "shrinkage": SHRINKAGE, "ridge": RIDGE, "feature": "features() pooled",
                       "n_val": config["n_val"], "seed": config["seed"], "limit": limit},
            "n_train_images": len(train), "n_val_images": len(val), "complete": True,
            "metrics": {"val_pass_rate": passed, "threshold": detector.threshold},
            "history": [{"seconds": seconds}]}
    return save_ood(detector, out, card)
