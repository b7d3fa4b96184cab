"""Datasets by name, held in memory as uint8 tensors, with a seeded validation split.

``fashion-mnist`` (default, offline from Debian's ``dataset-fashion-mnist`` when present),
``cifar10`` and ``svhn`` (torchvision's readers), ``tiny-imagenet`` (the standard folder
layout). The validation split is carved from the training set with a fixed seed and is what
checkpoints are selected on; the test split is for reporting only.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ..registry import Registry

SPLITS = ("train", "val", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shape, classes, normalisation and the usual eps."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float
    class_names: tuple[str, ...] = field(default=())


INFO: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), 0.1,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot")),
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), 8 / 255,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "svhn": DatasetInfo(
        "svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 8 / 255,
        tuple(str(d) for d in range(10))),
    "tiny-imagenet": DatasetInfo(
        "tiny-imagenet", 3, 64, 200, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 4 / 255),
}


class ImageTensors(Dataset):
    """Images (N, C, H, W) uint8 and labels (N,) int64; items are float images in [0,1]
    (``torch.get_default_dtype()``, i.e. float32).

    Indexing with a list or tensor of indices returns a whole batch at once, which is what
    ``make_loader`` uses (much faster than collating single items).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str] = ()) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.class_names = tuple(class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        # float32 unless a caller chose another default dtype (the float64 checks in the tests).
        return self.images[index].to(torch.get_default_dtype()).div_(255), self.labels[index]

    def subset(self, indices: torch.Tensor) -> "ImageTensors":
        return ImageTensors(self.images[indices], self.labels[indices], self.class_names)


Raw = tuple[torch.Tensor, torch.Tensor]  # uint8 (N,C,H,W), int64 (N,)
LOADERS: Registry = Registry("dataset")


# ----------------------------------------------------------------------------- Fashion-MNIST
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz), the format of (Fashion-)MNIST.

    Written here because torchvision's reader only takes uncompressed files inside its own
    folder layout, while Debian ships the original .gz files.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - offset != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes) but holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


@LOADERS.register("fashion-mnist")
def load_fashion_mnist(root: Path, train: bool, download: bool = True) -> Raw:
    prefix = "train" if train else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(root, s) for s in stems]
    if None in paths:
        if not download:
            raise FileNotFoundError(f"Fashion-MNIST files {stems} not found under {root}")
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        paths = [_find_idx(root, s) for s in stems]
    images = torch.from_numpy(read_idx(paths[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(paths[1]).astype(np.int64))
    return images, labels


# ----------------------------------------------------------------------------- CIFAR-10, SVHN
@LOADERS.register("cifar10")
def load_cifar10(root: Path, train: bool, download: bool = True) -> Raw:
    import torchvision

    ds = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.int64)


@LOADERS.register("svhn")
def load_svhn(root: Path, train: bool, download: bool = True) -> Raw:
    import torchvision

    ds = torchvision.datasets.SVHN(str(root), split="train" if train else "test", download=download)
    return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64))


# ----------------------------------------------------------------------------- Tiny-ImageNet
def _tiny_root(root: Path) -> Path:
    return root / "tiny-imagenet-200" if (root / "tiny-imagenet-200").is_dir() else root


def _read_rgb(paths: Sequence[str], size: int = 64) -> torch.Tensor:
    from PIL import Image

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as img:  # some Tiny-ImageNet images are greyscale
            arr = np.asarray(img.convert("RGB").resize((size, size)), dtype=np.uint8)
        out[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return out


@LOADERS.register("tiny-imagenet")
def load_tiny_imagenet(root: Path, train: bool, download: bool = False) -> Raw:
    """Standard layout: train/<wnid>/images/*.JPEG; val/images + val/val_annotations.txt.

    The labelled ``val`` folder serves as the test split (the official test set has no labels).
    """
    import torchvision

    base = _tiny_root(root)
    if not (base / "train").is_dir():
        raise FileNotFoundError(f"Tiny-ImageNet not found under {root} (expected tiny-imagenet-200/train)")
    folder = torchvision.datasets.ImageFolder(str(base / "train"))
    if train:
        paths, labels = zip(*folder.samples) if folder.samples else ((), ())
        return _read_rgb(paths), torch.tensor(labels, dtype=torch.int64)
    paths, labels = [], []
    with open(base / "val" / "val_annotations.txt") as handle:
        for line in handle:
            parts = line.split("\t")
            if len(parts) >= 2:
                paths.append(str(base / "val" / "images" / parts[0]))
                labels.append(folder.class_to_idx[parts[1]])
    return _read_rgb(paths), torch.tensor(labels, dtype=torch.int64)


def tiny_imagenet_class_names(root: Path) -> tuple[str, ...]:
    """Readable names from words.txt when present, else the WordNet ids."""
    base = _tiny_root(root)
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    words: dict[str, str] = {}
    if (base / "words.txt").is_file():
        for line in (base / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    return tuple(words.get(w, w) for w in wnids)


# ----------------------------------------------------------------------------- public API
def default_root(name: str) -> Path:
    """Where ``name`` is read from: $CAFE_DATA_DIR, Debian's folder for Fashion-MNIST, or a cache."""
    if os.environ.get("CAFE_DATA_DIR"):
        return Path(os.environ["CAFE_DATA_DIR"]) / name
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    return Path.home() / ".cache" / "cafe_lab" / "data" / name


def get_info(name: str) -> DatasetInfo:
    """Static facts about dataset ``name``."""
    LOADERS.get(name)  # raises a clear KeyError for unknown names
    return INFO[name.lower()]


def validation_indices(n_train: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n_train)`` into (train indices, validation indices)."""
    if not 0 <= n_val < n_train:
        raise ValueError(f"n_val must be in [0, {n_train}), got {n_val}")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def load_split(name: str, split: str, root: str | Path | None = None, n_val: int = 5000,
               seed: int = 0, download: bool = True, limit: int | None = None) -> ImageTensors:
    """Load ``split`` ('train', 'val' or 'test') of dataset ``name`` into memory.

    Args:
        root: folder with the dataset files (default ``default_root(name)``).
        n_val: images held out of the training set for validation (same for 'train' and 'val').
        seed: seed of the validation split.
        download: allow torchvision to download when files are missing.
        limit: keep only the first ``limit`` images of the split (after the split is made).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    info = get_info(name)
    root = Path(root) if root is not None else default_root(info.name)
    loader: Callable[..., Raw] = LOADERS.get(info.name)
    images, labels = loader(root, split != "test", download=download)
    if split != "test":
        train_idx, val_idx = validation_indices(len(labels), n_val, seed)
        keep = train_idx if split == "train" else val_idx
        images, labels = images[keep], labels[keep]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    names = info.class_names or tiny_imagenet_class_names(root)
    return ImageTensors(images.contiguous(), labels, names)


def make_loader(dataset: ImageTensors, batch_size: int, shuffle: bool, seed: int = 0,
                drop_last: bool = False, sampler=None, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of (images float [0,1], labels); shuffling is seeded (pass ``seed + epoch``).

    A custom ``sampler`` (e.g. ``DistributedSampler``) replaces the default one. With
    ``workers`` > 0 batches are made in that many persistent worker processes, in pinned memory
    when ``pin_memory`` (for fast copies to a GPU); with none, in this process as before.
    """
    if sampler is None:
        sampler = (RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle
                   else SequentialSampler(dataset))
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    if workers <= 0:
        return DataLoader(dataset, sampler=batches, batch_size=None)
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=True)
