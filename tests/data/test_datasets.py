"""Tests of cafe_core.data.datasets against tiny files written in each dataset's real on-disk format.

Nothing in the loaders is mocked: only torchvision's md5 tables are pointed at the files
written here (the real tables hold the checksums of the full datasets).
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cafe_core.data import datasets as data
from cafe_core.data.datasets import ImageTensors, load_split, make_loader, read_idx


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ============================================================================ Fashion-MNIST
N_FM_TRAIN, N_FM_TEST = 20, 6


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _fm_images(n: int, offset: int) -> np.ndarray:
    """Distinct images: pixel (r, c) of image i is (offset + 7 i + 28 r + c) % 256, pixel 0 = id."""
    r = np.arange(28)[:, None]
    c = np.arange(28)[None, :]
    imgs = np.stack([(offset + 7 * i + 28 * r + c) % 256 for i in range(n)]).astype(np.uint8)
    imgs[:, 0, 0] = offset + np.arange(n)  # unique id of each image
    return imgs


def _fm_labels(n: int, offset: int) -> np.ndarray:
    return ((offset + 3 * np.arange(n)) % 10).astype(np.uint8)


FM_TRAIN_IMAGES = _fm_images(N_FM_TRAIN, 0)
FM_TRAIN_LABELS = _fm_labels(N_FM_TRAIN, 0)
FM_TEST_IMAGES = _fm_images(N_FM_TEST, 100)
FM_TEST_LABELS = _fm_labels(N_FM_TEST, 1)


def _write_fashion_mnist(folder: Path, compressed: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": _idx_bytes(FM_TRAIN_IMAGES, 0x00000803),
        "train-labels-idx1-ubyte": _idx_bytes(FM_TRAIN_LABELS, 0x00000801),
        "t10k-images-idx3-ubyte": _idx_bytes(FM_TEST_IMAGES, 0x00000803),
        "t10k-labels-idx1-ubyte": _idx_bytes(FM_TEST_LABELS, 0x00000801),
    }
    for name, payload in files.items():
        if compressed:
            with gzip.open(folder / (name + ".gz"), "wb") as handle:
                handle.write(payload)
        else:
            (folder / name).write_bytes(payload)
    return folder


@pytest.fixture
def fm_root(tmp_path: Path) -> Path:
    return _write_fashion_mnist(tmp_path / "fm", compressed=True)


def _ids(ds: ImageTensors) -> list[int]:
    return ds.images[:, 0, 0, 0].tolist()


def test_idx_header_layout_is_real():
    # guard against writing the test files wrongly: check the bytes of a known header
    raw = _idx_bytes(FM_TRAIN_IMAGES, 0x00000803)
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == b"\x00\x00\x00\x14\x00\x00\x00\x1c\x00\x00\x00\x1c"
    assert len(raw) == 16 + 20 * 28 * 28


def test_fashion_mnist_test_split_gz(fm_root):
    ds = load_split("fashion-mnist", "test", root=fm_root, n_val=5, seed=0, download=False)
    assert ds.images.dtype == torch.uint8
    assert tuple(ds.images.shape) == (N_FM_TEST, 1, 28, 28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(FM_TEST_IMAGES))
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == FM_TEST_LABELS.tolist()
    assert len(ds) == N_FM_TEST
    assert ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10
    image, label = ds[2]
    assert image.dtype == torch.float32 and tuple(image.shape) == (1, 28, 28)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    expected = torch.from_numpy(FM_TEST_IMAGES[2]).float() / 255
    assert torch.allclose(image[0], expected)
    assert int(label) == int(FM_TEST_LABELS[2])
    # the stored uint8 images must not be changed by reading an item (div_ in place)
    assert torch.equal(ds.images[2, 0], torch.from_numpy(FM_TEST_IMAGES[2]))


def test_fashion_mnist_batch_indexing(fm_root):
    ds = load_split("fashion-mnist", "test", root=fm_root, n_val=5, download=False)
    images, labels = ds[[4, 0, 3]]
    assert tuple(images.shape) == (3, 1, 28, 28)
    assert labels.tolist() == [int(FM_TEST_LABELS[i]) for i in (4, 0, 3)]
    assert torch.allclose(images[0, 0], torch.from_numpy(FM_TEST_IMAGES[4]).float() / 255)


def test_fashion_mnist_train_val_split(fm_root):
    train = load_split("fashion-mnist", "train", root=fm_root, n_val=5, seed=0, download=False)
    val = load_split("fashion-mnist", "val", root=fm_root, n_val=5, seed=0, download=False)
    assert tuple(train.images.shape) == (15, 1, 28, 28)
    assert tuple(val.images.shape) == (5, 1, 28, 28)
    train_ids, val_ids = _ids(train), _ids(val)
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(N_FM_TRAIN))
    # every image keeps its own pixels and its own label
    for ds in (train, val):
        for k, i in enumerate(_ids(ds)):
            assert torch.equal(ds.images[k, 0], torch.from_numpy(FM_TRAIN_IMAGES[i]))
            assert int(ds.labels[k]) == int(FM_TRAIN_LABELS[i])


def test_fashion_mnist_split_is_seeded(fm_root):
    def val_ids(seed):
        return _ids(load_split("fashion-mnist", "val", root=fm_root, n_val=5, seed=seed, download=False))

    def train_ids(seed):
        return _ids(load_split("fashion-mnist", "train", root=fm_root, n_val=5, seed=seed, download=False))

    assert val_ids(0) == val_ids(0)
    assert train_ids(0) == train_ids(0)
    assert set(val_ids(1)) != set(val_ids(0))
    assert sorted(train_ids(1) + val_ids(1)) == list(range(N_FM_TRAIN))
    # n_val = 0 keeps the whole training set
    assert sorted(train_ids_all := _ids(load_split("fashion-mnist", "train", root=fm_root, n_val=0,
                                                   download=False))) == list(range(N_FM_TRAIN))
    assert len(train_ids_all) == N_FM_TRAIN


def test_fashion_mnist_bad_n_val(fm_root):
    for n_val in (N_FM_TRAIN, N_FM_TRAIN + 1, -1):
        with pytest.raises(ValueError):
            load_split("fashion-mnist", "train", root=fm_root, n_val=n_val, download=False)


def test_fashion_mnist_limit(fm_root):
    full = load_split("fashion-mnist", "train", root=fm_root, n_val=5, seed=3, download=False)
    cut = load_split("fashion-mnist", "train", root=fm_root, n_val=5, seed=3, download=False, limit=4)
    assert len(cut) == 4
    assert torch.equal(cut.images, full.images[:4])
    assert torch.equal(cut.labels, full.labels[:4])


def test_fashion_mnist_torchvision_raw_layout(tmp_path):
    _write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compressed=False)
    test = load_split("fashion-mnist", "test", root=tmp_path, download=False)
    assert torch.equal(test.images[:, 0], torch.from_numpy(FM_TEST_IMAGES))
    assert test.labels.tolist() == FM_TEST_LABELS.tolist()
    train = load_split("fashion-mnist", "train", root=tmp_path, n_val=4, seed=0, download=False)
    assert len(train) == N_FM_TRAIN - 4
    assert set(_ids(train)) <= set(range(N_FM_TRAIN))


def test_read_idx_plain_and_gz(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(arr, 0x00000803))
    with gzip.open(tmp_path / "a.gz", "wb") as handle:
        handle.write(_idx_bytes(arr, 0x00000803))
    for name in ("a", "a.gz"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4) and out.dtype == np.uint8
        assert np.array_equal(out, arr)


def test_read_idx_rejects_size_mismatch(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    raw = _idx_bytes(arr, 0x00000803)
    (tmp_path / "short").write_bytes(raw[:-1])
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(raw[:-5])
    for name in ("short", "long", "short.gz"):
        with pytest.raises(ValueError):
            read_idx(tmp_path / name)


def test_read_idx_rejects_wrong_magic(tmp_path):
    arr = np.zeros((2, 4), dtype=np.uint8)
    for i, magic in enumerate((0x00000903, 0x00000D02, 0x01000802, 0x08030000)):
        path = tmp_path / f"bad{i}"
        path.write_bytes(_idx_bytes(arr, magic))
        with pytest.raises(ValueError):
            read_idx(path)
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError):
        read_idx(tmp_path / "tiny")


# ============================================================================ CIFAR-10
CIFAR_PER_BATCH, N_CIFAR_TEST = 2, 3
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return rows


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """Real cifar-10-batches-py layout; returns (root, train rows, train labels, test rows, test labels)."""
    import torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_rows, train_labels, train_list = [], [], []
    for b in range(1, 6):
        rows = _cifar_rows(CIFAR_PER_BATCH, seed=b)
        rows[:, 0] = 10 * b + np.arange(CIFAR_PER_BATCH)  # unique id in red pixel (0, 0)
        labels = [(b + 3 * k) % 10 for k in range(CIFAR_PER_BATCH)]
        # python-2 pickles of the real files hold str keys once read with encoding="latin1"
        entry = {"batch_label": f"training batch {b} of 5", "labels": labels, "data": rows,
                 "filenames": [f"img_{b}_{k}.png" for k in range(CIFAR_PER_BATCH)]}
        with open(folder / f"data_batch_{b}", "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
        train_rows.append(rows)
        train_labels.extend(labels)
        train_list.append([f"data_batch_{b}", _md5(folder / f"data_batch_{b}")])
    test_rows = _cifar_rows(N_CIFAR_TEST, seed=99)
    test_labels = [9, 0, 4]
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test_rows,
                     "filenames": ["t0.png", "t1.png", "t2.png"]}, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": CIFAR_PER_BATCH,
                     "num_vis": 3072}, handle, protocol=2)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "meta",
                        {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")})
    return tmp_path, np.concatenate(train_rows), train_labels, test_rows, test_labels


def test_cifar10_test_split_pixel_layout(cifar_root):
    root, _, _, test_rows, test_labels = cifar_root
    ds = load_split("cifar10", "test", root=root, download=False)
    assert ds.images.dtype == torch.uint8
    assert tuple(ds.images.shape) == (N_CIFAR_TEST, 3, 32, 32)
    assert ds.labels.tolist() == test_labels
    assert list(ds.class_names) == CIFAR_NAMES
    for n in range(N_CIFAR_TEST):
        expected = torch.from_numpy(test_rows[n].reshape(3, 32, 32))
        assert torch.equal(ds.images[n], expected)
    # spot checks of the planar layout: channel c, row r, column x is byte 1024 c + 32 r + x
    for c, r, x in ((0, 0, 1), (1, 5, 7), (2, 31, 30), (2, 0, 0)):
        assert int(ds.images[1, c, r, x]) == int(test_rows[1, 1024 * c + 32 * r + x])
    image, label = ds[0]
    assert torch.allclose(image, torch.from_numpy(test_rows[0].reshape(3, 32, 32)).float() / 255)
    assert int(label) == 9


def test_cifar10_train_val_split(cifar_root):
    root, train_rows, train_labels, _, _ = cifar_root
    n_train = 5 * CIFAR_PER_BATCH
    train = load_split("cifar10", "train", root=root, n_val=3, seed=0, download=False)
    val = load_split("cifar10", "val", root=root, n_val=3, seed=0, download=False)
    assert tuple(train.images.shape) == (n_train - 3, 3, 32, 32)
    assert tuple(val.images.shape) == (3, 3, 32, 32)
    id_to_index = {int(train_rows[i, 0]): i for i in range(n_train)}
    seen = []
    for ds in (train, val):
        for k in range(len(ds)):
            i = id_to_index[int(ds.images[k, 0, 0, 0])]
            seen.append(i)
            assert torch.equal(ds.images[k], torch.from_numpy(train_rows[i].reshape(3, 32, 32)))
            assert int(ds.labels[k]) == train_labels[i]
    assert sorted(seen) == list(range(n_train))


def test_cifar10_corrupted_file_is_rejected(cifar_root):
    root = cifar_root[0]
    with open(root / "cifar-10-batches-py" / "data_batch_3", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(RuntimeError):
        load_split("cifar10", "train", root=root, n_val=1, download=False)


# ============================================================================ SVHN
N_SVHN_TRAIN, N_SVHN_TEST = 8, 4


@pytest.fixture
def svhn_root(tmp_path, monkeypatch):
    import scipy.io
    import torchvision

    rng = np.random.default_rng(7)
    x_train = rng.integers(0, 256, size=(32, 32, 3, N_SVHN_TRAIN), dtype=np.uint8)
    x_train[0, 0, 0, :] = np.arange(N_SVHN_TRAIN)  # id in red pixel (0, 0)
    y_train = np.array([[10], [1], [2], [10], [5], [9], [3], [10]], dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(32, 32, 3, N_SVHN_TEST), dtype=np.uint8)
    y_test = np.array([[4], [10], [7], [1]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x_train, "y": y_train})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x_test, "y": y_test})
    table = {k: list(v) for k, v in torchvision.datasets.SVHN.split_list.items()}
    table["train"][2] = _md5(tmp_path / "train_32x32.mat")
    table["test"][2] = _md5(tmp_path / "test_32x32.mat")
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", table)
    return tmp_path, x_train, y_train[:, 0], x_test, y_test[:, 0]


def test_svhn_test_split(svhn_root):
    root, _, _, x_test, _ = svhn_root
    ds = load_split("svhn", "test", root=root, download=False)
    assert ds.images.dtype == torch.uint8
    assert tuple(ds.images.shape) == (N_SVHN_TEST, 3, 32, 32)
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [4, 0, 7, 1]
    assert list(ds.class_names) == [str(d) for d in range(10)]
    # X[row, col, channel, n] -> images[n, channel, row, col]
    expected = torch.from_numpy(np.ascontiguousarray(x_test.transpose(3, 2, 0, 1)))
    assert torch.equal(ds.images, expected)
    for n, c, r, x in ((0, 0, 3, 17), (2, 1, 31, 0), (3, 2, 0, 31)):
        assert int(ds.images[n, c, r, x]) == int(x_test[r, x, c, n])


def test_svhn_train_val_split(svhn_root):
    root, x_train, y_train, _, _ = svhn_root
    train = load_split("svhn", "train", root=root, n_val=3, seed=5, download=False)
    val = load_split("svhn", "val", root=root, n_val=3, seed=5, download=False)
    assert len(train) == N_SVHN_TRAIN - 3 and len(val) == 3
    seen = []
    for ds in (train, val):
        for k in range(len(ds)):
            i = int(ds.images[k, 0, 0, 0])
            seen.append(i)
            assert torch.equal(ds.images[k], torch.from_numpy(np.ascontiguousarray(x_train[..., i].transpose(2, 0, 1))))
            assert int(ds.labels[k]) == (0 if y_train[i] == 10 else int(y_train[i]))
    assert sorted(seen) == list(range(N_SVHN_TRAIN))
    assert int((torch.cat([train.labels, val.labels]) == 0).sum()) == 3
    assert int(torch.cat([train.labels, val.labels]).max()) <= 9


# ============================================================================ Tiny-ImageNet
# wnids deliberately not in sorted order in wnids.txt: labels must follow sorted wnids
TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]
TINY_COLORS = {"n01000000": (200, 30, 30), "n02000000": (30, 200, 30), "n03000000": (30, 30, 200)}
TINY_WORDS = {"n01000000": "goldfish, Carassius auratus", "n02000000": "tabby, tabby cat",
              "n03000000": "school bus", "n09999999": "unused entry, not a class"}
GREY = 128  # one greyscale image, in class n02000000
# val images: (file, wnid) in annotation order; colors by class
TINY_VAL = [("val_0.JPEG", "n02000000"), ("val_1.JPEG", "n01000000"), ("val_2.JPEG", "n03000000"),
            ("val_3.JPEG", "n01000000"), ("val_4.JPEG", "n03000000"), ("val_5.JPEG", "n02000000")]


@pytest.fixture
def tiny_root(tmp_path):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)  # unlabelled official test folder, ignored
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in TINY_WORDS.items()))
    for wnid in TINY_WNIDS:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        boxes = []
        for i in range(4):
            if wnid == "n02000000" and i == 2:
                img = Image.new("L", (64, 64), GREY)
            else:
                img = Image.new("RGB", (64, 64), TINY_COLORS[wnid])
            img.save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=95)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    lines = []
    for name, wnid in TINY_VAL:
        Image.new("RGB", (64, 64), TINY_COLORS[wnid]).save(base / "val" / "images" / name, format="JPEG", quality=95)
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    Image.new("RGB", (64, 64), (0, 0, 0)).save(base / "test" / "images" / "test_0.JPEG", format="JPEG")
    return tmp_path


SORTED_WNIDS = sorted(TINY_WNIDS)


def _mean_rgb(image: torch.Tensor) -> np.ndarray:
    return image.float().mean(dim=(1, 2)).numpy()


def _assert_solid(image: torch.Tensor, rgb, tol: float = 10.0) -> None:
    mean = _mean_rgb(image)
    assert np.all(np.abs(mean - np.asarray(rgb, dtype=np.float32)) < tol), (mean, rgb)


def test_tiny_imagenet_train_split(tiny_root):
    ds = load_split("tiny-imagenet", "train", root=tiny_root, n_val=0, download=False)
    assert ds.images.dtype == torch.uint8
    assert tuple(ds.images.shape) == (12, 3, 64, 64)
    # ImageFolder order: sorted classes, then sorted file names
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.class_names == ("goldfish", "tabby", "school bus")
    for k in range(12):
        wnid = SORTED_WNIDS[int(ds.labels[k])]
        if wnid == "n02000000" and k == 4 + 2:
            assert torch.equal(ds.images[k, 0], ds.images[k, 1])  # greyscale -> RGB replicates
            assert torch.equal(ds.images[k, 0], ds.images[k, 2])
            _assert_solid(ds.images[k], (GREY, GREY, GREY))
        else:
            _assert_solid(ds.images[k], TINY_COLORS[wnid])


def test_tiny_imagenet_train_val_split(tiny_root):
    train = load_split("tiny-imagenet", "train", root=tiny_root, n_val=5, seed=1, download=False)
    val = load_split("tiny-imagenet", "val", root=tiny_root, n_val=5, seed=1, download=False)
    assert tuple(train.images.shape) == (7, 3, 64, 64) and tuple(val.images.shape) == (5, 3, 64, 64)
    labels = sorted(train.labels.tolist() + val.labels.tolist())
    assert labels == [0] * 4 + [1] * 4 + [2] * 4
    greys = 0
    for ds in (train, val):
        for k in range(len(ds)):
            mean = _mean_rgb(ds.images[k])
            if np.all(np.abs(mean - GREY) < 10):
                greys += 1
                assert int(ds.labels[k]) == 1
            else:
                _assert_solid(ds.images[k], TINY_COLORS[SORTED_WNIDS[int(ds.labels[k])]])
    assert greys == 1


def test_tiny_imagenet_test_split_is_val_folder(tiny_root):
    ds = load_split("tiny-imagenet", "test", root=tiny_root, download=False)
    assert tuple(ds.images.shape) == (6, 3, 64, 64)
    assert ds.labels.tolist() == [SORTED_WNIDS.index(w) for _, w in TINY_VAL] == [1, 0, 2, 0, 2, 1]
    for k, (_, wnid) in enumerate(TINY_VAL):
        _assert_solid(ds.images[k], TINY_COLORS[wnid])
    assert ds.class_names == ("goldfish", "tabby", "school bus")


def test_tiny_imagenet_root_can_be_the_inner_folder(tiny_root):
    ds = load_split("tiny-imagenet", "test", root=tiny_root / "tiny-imagenet-200", download=False)
    assert ds.labels.tolist() == [1, 0, 2, 0, 2, 1]
    assert ds.class_names == ("goldfish", "tabby", "school bus")


def test_tiny_imagenet_class_names_without_words(tiny_root):
    (tiny_root / "tiny-imagenet-200" / "words.txt").unlink()
    ds = load_split("tiny-imagenet", "test", root=tiny_root, download=False)
    assert ds.class_names == tuple(SORTED_WNIDS)


# ============================================================================ errors
def test_unknown_dataset_name(tmp_path):
    with pytest.raises(KeyError) as info:
        load_split("imagenet-21k", "train", root=tmp_path, download=False)
    message = str(info.value)
    for name in ("cifar10", "fashion-mnist", "svhn", "tiny-imagenet"):
        assert name in message
    assert "imagenet-21k" in message


def test_name_is_case_insensitive(fm_root):
    ds = load_split("Fashion-MNIST", "test", root=fm_root, download=False)
    assert len(ds) == N_FM_TEST


def test_bad_split(fm_root):
    with pytest.raises(ValueError, match="split"):
        load_split("fashion-mnist", "foo", root=fm_root, download=False)


def test_missing_fashion_mnist(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_split("fashion-mnist", "train", root=tmp_path, download=False)
    # only the training files present: the test split is still missing
    folder = _write_fashion_mnist(tmp_path / "partial", compressed=True)
    for f in folder.glob("t10k-*"):
        f.unlink()
    with pytest.raises(FileNotFoundError):
        load_split("fashion-mnist", "test", root=folder, download=False)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_missing_torchvision_datasets(tmp_path, name):
    with pytest.raises(RuntimeError, match="not found"):
        load_split(name, "test", root=tmp_path, download=False)


def test_missing_tiny_imagenet(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_split("tiny-imagenet", "train", root=tmp_path, download=False)


def test_image_tensors_validation():
    with pytest.raises(ValueError):
        ImageTensors(torch.zeros(2, 1, 4, 4), torch.zeros(2))  # float images
    with pytest.raises(ValueError):
        ImageTensors(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2))  # 3-D
    with pytest.raises(ValueError):
        ImageTensors(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3))


def test_get_info():
    assert data.get_info("cifar10").num_classes == 10
    assert data.get_info("tiny-imagenet").image_size == 64
    with pytest.raises(KeyError):
        data.get_info("nope")


# ============================================================================ make_loader
def _indexed_dataset(n: int) -> ImageTensors:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageTensors(images, torch.arange(n))


def _order(loader) -> list[list[int]]:
    return [labels.tolist() for _, labels in loader]


def test_make_loader_sequential_batches():
    ds = _indexed_dataset(10)
    batches = list(make_loader(ds, batch_size=4, shuffle=False))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    images, labels = batches[1]
    assert images.dtype == torch.float32 and tuple(images.shape) == (4, 1, 2, 2)
    assert torch.allclose(images[:, 0, 0, 0], labels.float() / 255)
    dropped = _order(make_loader(ds, batch_size=4, shuffle=False, drop_last=True))
    assert dropped == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_make_loader_seeded_shuffle():
    ds = _indexed_dataset(50)
    a = _order(make_loader(ds, batch_size=8, shuffle=True, seed=3))
    b = _order(make_loader(ds, batch_size=8, shuffle=True, seed=3))
    c = _order(make_loader(ds, batch_size=8, shuffle=True, seed=4))
    assert a == b
    assert a != c
    assert [len(x) for x in a] == [8] * 6 + [2]
    flat = [i for batch in a for i in batch]
    assert sorted(flat) == list(range(50)) and flat != list(range(50))
    assert sorted(i for batch in c for i in batch) == list(range(50))
    dropped = _order(make_loader(ds, batch_size=8, shuffle=True, seed=3, drop_last=True))
    assert [len(x) for x in dropped] == [8] * 6
    assert dropped == a[:6]  # same seed: same permutation, last partial batch dropped
    # images and labels travel together in shuffled batches
    for images, labels in make_loader(ds, batch_size=8, shuffle=True, seed=9):
        assert torch.allclose(images[:, 0, 0, 0] * 255, labels.float())


def test_make_loader_custom_sampler():
    ds = _indexed_dataset(6)
    loader = make_loader(ds, batch_size=2, shuffle=True, sampler=[5, 4, 3, 2, 1, 0])
    assert _order(loader) == [[5, 4], [3, 2], [1, 0]]
