"""Shared fixtures: real Fashion-MNIST subsets and a quickly trained toy model."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # tests never phone home
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Square's compiled query model (~8 s of compiling per model) only where a test asks for it
# (tests/attacks/test_inference.py); importing the app's handlers sets the same for the app's
# process, so without this a test's speed would depend on which module ran before it.
os.environ.setdefault("CAFE_FAST_QUERIES", "0")

from cafe_core.data.datasets import DEBIAN_FASHION_MNIST, get_info, load_split


def threads_per_process() -> int:
    """Torch threads per test process: CAFE_TEST_THREADS, else the cores shared out among the
    pytest-xdist workers, at least one (``-n 3`` on 2 cores: one each; more threads than cores make
    torch's thread pools wait on each other)."""
    if "CAFE_TEST_THREADS" in os.environ:
        return int(os.environ["CAFE_TEST_THREADS"])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


torch.set_num_threads(threads_per_process())


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Torch's thread count set to ``n`` (None: left alone) inside, and restored after, whatever the
    code inside sets (a command's --threads, a benchmark's main)."""
    threads = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: The modules that take longest under ``-n 3`` (about 30-130 s each on 2 cores; ``--durations``),
#: longest first. They run before the rest, so that each xdist worker ends on short modules rather
#: than one worker finishing a long one alone (pytest.ini keeps this order: --no-loadscope-reorder).
#: A stale list costs only time.
LONGEST_FIRST = (
    "tests/app/test_api.py", "tests/app/test_browser.py", "tests/benchmarks/test_autoattack_budget.py",
    "tests/io/test_faults.py", "tests/test_distributed.py", "tests/training/test_trainer.py", "tests/cli/test_cli.py",
    "tests/evaluation/test_grid.py", "tests/benchmarks/test_gpu_grid.py", "tests/training/test_pipeline.py",
    "tests/attacks/test_registry.py", "tests/attacks/test_inference.py", "tests/serving/test_report.py",
    "tests/serving/test_gallery.py", "tests/evaluation/test_ood.py",
)


def module_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=module_rank)  # stable: tests keep their order within a module
    if DEBIAN_FASHION_MNIST.is_dir():
        return
    skip = pytest.mark.skip(reason="needs Debian package dataset-fashion-mnist")
    for item in items:
        if "fashion" in item.fixturenames or "toy_model" in item.fixturenames:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fashion():
    """(train subset of 2048, val subset of 512, test subset of 512) real Fashion-MNIST images."""
    train = load_split("fashion-mnist", "train", limit=2048, download=False)
    val = load_split("fashion-mnist", "val", limit=512, download=False)
    test = load_split("fashion-mnist", "test", limit=512, download=False)
    return train, val, test


def make_lite(seed: int = 0):
    from cafe_core.models import create_model

    info = get_info("fashion-mnist")
    torch.manual_seed(seed)
    return create_model("lite", info.channels, info.num_classes, info.mean, info.std)


def train_toy_model(train) -> torch.nn.Module:
    """2 clean epochs of SGD on ``train``, on one thread whatever the run's thread count: two
    epochs this short are chaotic (at lr 0.05 the thread count alone moved test accuracy from 68%
    to 46%), and every test, serial or under pytest-xdist, should see the same model."""
    from cafe_core.data.datasets import make_loader

    model = make_lite()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    with torch_threads(1):
        for epoch in range(2):
            for images, labels in make_loader(train, 64, shuffle=True, seed=epoch):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def toy_model(fashion, tmp_path_factory):
    """A lite backbone trained for 2 clean epochs on 2,048 real images (~60% accuracy, not robust).

    Under pytest-xdist the first worker to need it trains it and saves it (safetensors) in the
    run's shared temporary folder; the others load it."""
    from filelock import FileLock
    from safetensors.torch import load_file, save_file

    from cafe_core.io.serialization import atomic_write

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return train_toy_model(fashion[0])
    path = tmp_path_factory.getbasetemp().parent / "toy_model.safetensors"  # this run's, shared by its workers
    with FileLock(f"{path}.lock"):
        if path.is_file():
            model = make_lite()
            model.load_state_dict(load_file(path))
            return model.eval()
        model = train_toy_model(fashion[0])
        atomic_write(path, lambda tmp: save_file(model.state_dict(), tmp))  # no half file for the other worker
        return model


CARD = {"dataset": "fashion-mnist", "backbone": "lite", "eps": 0.1, "config": {}, "seed": 0}


@pytest.fixture()
def amr_files(tmp_path, toy_model):
    """(adv, amr) checkpoint files: the toy backbone and untrained h, g, with matching cards."""
    from cafe_core.io.checkpoints import save_checkpoint
    from cafe_core.models.estimator import create_estimator
    from cafe_core.io.checkpoints import parent_record

    adv = tmp_path / "adv.safetensors"
    adv_card = save_checkpoint(adv, {"model": toy_model}, dict(CARD, stage="adv", parent=None))
    torch.manual_seed(0)
    h, g = create_estimator(128), create_estimator(128)
    amr = tmp_path / "amr.safetensors"
    save_checkpoint(amr, {"h": h, "g": g}, dict(CARD, stage="amr", parent=parent_record(adv, adv_card)))
    return adv, amr


