"""torchrun: 2 gloo ranks on the CPU train and evaluate what one process does.

What "the same" means. The config's batch size is the *global* batch: a 2-rank run takes 16
images per rank where one process takes 32, the ranks' step-k batches are together the single
process's step-k batch (one permutation per epoch), DDP averages the two half-batch gradients
into the full-batch gradient and BatchNorm statistics span both ranks (h and g always; the ADV
backbone with --sync-bn). The training attacks are FGSM (no random start), so both runs see
the same adversarial images. Then the two runs compute the same numbers up to summation order.

All two-rank runs share one torchrun launch (``tests/ranks_plan.py``): a launch starts three
processes that import torch, which costs more here than the runs themselves.

Why float64 (``tests/ranks_plan.py``): in float32, rounding alone moves two *single-process*
runs that differ only in their CPU thread count apart by ~10% of a short run's weight update,
which would hide a real difference. In float64 the 2-rank and 1-process runs agree to ~1e-13
(ADV) / ~1e-9 (AMR-GMM, AdamW); a 2-rank ADV run without --sync-bn is off by ~1% of its update.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cafe_core import distributed
from cafe_core.io.checkpoints import load_checkpoint, save_checkpoint
from cafe_core.data.datasets import ImageTensors, make_loader
from cafe_core.training.trainer import training_loader
from tests.conftest import make_lite, torch_threads
from tests.ranks_plan import run_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """\
name = "ddp_check"
dataset = "fashion-mnist"
backbone = "lite"
eps = 0.1
seed = 0
n_val = 64
checkpoint_dir = "{folder}"

[stages.adv]
epochs = 1
batch_size = 32
lr = 0.05
warmup = 0.3
attack = "fgsm"
val_attack = "fgsm"
val_adv_images = 32

[stages.amr]
epochs = 1
batch_size = 32
lr = 1e-3
attack = "fgsm"
val_images = 32
"""
TRAIN = ["--limit", "128", "--threads", "1", "--quiet", "--device", "cpu"]
EVALUATE = ["evaluate", "--attacks", "clean,fgsm_rs,pgd", "--steps", "pgd=3", "--n-images", "80", "--batch-size", "32",
            "--threads", "1", "--quiet", "--device", "cpu"]


def start_torchrun(*args: str) -> subprocess.Popen:
    """``python -m torch.distributed.run --nproc_per_node 2 --standalone <args>``, started."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(run: subprocess.Popen, timeout: int = 300) -> str:
    """Wait for a started torchrun; its output (the test fails with its tail if it failed or hung)."""
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        run.terminate()  # torchrun passes it on to the ranks
        stdout, stderr = run.communicate(timeout=30)
        pytest.fail(f"torchrun still running after {timeout} s:\n{stdout[-3000:]}{stderr[-3000:]}")
    finally:
        run.kill()
    assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def in_process(dtype: str, argv: list[str]) -> None:
    """The CLI in this process as each rank runs it (``ranks_plan.run_cli``); the CLI's --threads
    lasts only for the run."""
    with torch_threads():
        run_cli(dtype, argv)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_same_history(one: dict, two: dict) -> None:
    (first,), (second,) = one["history"], two["history"]
    assert first.keys() == second.keys()
    for key in first:
        if key != "seconds":
            assert second[key] == pytest.approx(first[key], rel=1e-6, abs=1e-9), key


# ----------------------------------------------------------------------------- one process
def test_helpers_are_the_identity_in_one_process():
    assert not distributed.is_distributed() and distributed.world() == distributed.World()
    assert distributed.is_main() and distributed.world().size == 1
    values = {"loss": 2.5, "seen": 64}
    reduced = distributed.reduce_sums(values)
    assert reduced == {"loss": 2.5, "seen": 64.0} and reduced is not values
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object([3]) == [3]
    assert torch.equal(distributed.shard_indices(5), torch.arange(5))
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert distributed.wrap(net, torch.device("cpu")) is net
    assert distributed.sync_batchnorm(net) is net and type(net[1]) is nn.BatchNorm2d
    net[0].weight.grad = torch.ones_like(net[0].weight)
    distributed.average_gradients(net)
    distributed.broadcast_buffers([net])
    distributed.barrier()
    assert torch.equal(net[0].weight.grad, torch.ones_like(net[0].weight))


def test_without_torchrun_init_only_picks_the_device(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.env_world() == distributed.World()
    assert distributed.init("cpu") == torch.device("cpu") and not distributed.is_distributed()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: still one process
    assert distributed.init("cpu") == torch.device("cpu") and not distributed.is_distributed()


def test_one_process_draws_the_same_batches_as_before():
    """The DistributedSampler of one rank reproduces the RandomSampler order of earlier runs."""
    data = ImageTensors(torch.randint(0, 255, (203, 1, 4, 4), dtype=torch.uint8), torch.arange(203) % 10)
    loader, sampler = training_loader(data, 16, seed=3, device=torch.device("cpu"))
    for epoch in range(3):
        sampler.set_epoch(epoch)
        ours = [labels.tolist() for _, labels in loader]
        before = [labels.tolist() for _, labels in make_loader(data, 16, shuffle=True, seed=3000 + epoch,
                                                               drop_last=True)]
        assert ours == before


def test_batch_must_split_evenly_over_the_ranks(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(rank=0, size=3))
    data = ImageTensors(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.zeros(10))
    with pytest.raises(ValueError, match="not divisible"):
        training_loader(data, 16, seed=0, device=torch.device("cpu"))


# ----------------------------------------------------------------------------- two ranks
def quickly_trained(train: ImageTensors) -> nn.Module:
    """A lite backbone after one clean epoch on 1,024 images (~50% accuracy: attacks have work to do)."""
    model = make_lite(seed=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for images, labels in make_loader(train.subset(torch.arange(1024)), 64, shuffle=True, seed=0):
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion) -> Path:
    """Every two-rank run of this module in one torchrun launch (tests/ranks_plan.py) and,
    meanwhile, the same CLI runs in this process: ``<step>/two.*`` from the ranks, ``<step>/one.*``
    from one process, and ``ranks.out`` the ranks' output.

    Steps: the collective helpers; the ADV stage (--sync-bn) and the AMR-GMM stage in float64;
    ``evaluate`` of a briefly trained backbone in float32."""
    folder = tmp_path_factory.mktemp("ddp")
    config = folder / "ddp_check.toml"
    config.write_text(CONFIG.format(folder=folder.as_posix()))
    parent = folder / "parent_adv.safetensors"
    save_checkpoint(parent, {"model": make_lite(seed=3)}, {"dataset": "fashion-mnist", "backbone": "lite",
                                                           "eps": 0.1, "config": {}, "stage": "adv", "parent": None})
    backbone = folder / "evaluated_adv.safetensors"
    save_checkpoint(backbone, {"model": quickly_trained(fashion[0])},
                    {"dataset": "fashion-mnist", "backbone": "lite", "eps": 0.05, "stage": "adv", "parent": None,
                     "config_name": "ddp_check", "config": {"n_val": 128, "seed": 0}})
    steps = {  # step -> (dtype, CLI arguments without --out, suffix of the output)
        "adv": ("float64", ["train", "--stage", "adv", "--config", str(config), "--sync-bn", *TRAIN], ".safetensors"),
        "amr": ("float64", ["train", "--stage", "amr", "--config", str(config), "--parent", str(parent), *TRAIN],
                ".safetensors"),
        "evaluate": ("float32", EVALUATE + ["--checkpoint", str(backbone)], ".json"),
    }
    plan = [["collectives"]]
    for step, (dtype, argv, suffix) in steps.items():
        (folder / step).mkdir()
        plan.append(["cli", dtype, *argv, "--out", str(folder / step / f"two{suffix}")])
    (folder / "plan.json").write_text(json.dumps(plan))
    ranks = start_torchrun("tests/ranks_plan.py", str(folder / "plan.json"))
    try:
        for step, (dtype, argv, suffix) in steps.items():
            in_process(dtype, argv + ["--out", str(folder / step / f"one{suffix}")])
    finally:
        (folder / "ranks.out").write_text(finish(ranks))
    return folder


@pytest.mark.slow
def test_collective_helpers_on_two_ranks(runs):
    assert (runs / "ranks.out").read_text().count("all collective helpers agree") == 2


@pytest.mark.slow
def test_adv_stage_on_two_ranks_matches_one_process(runs):
    (one, one_card), (two, two_card) = (load_checkpoint(runs / "adv" / f"{n}.safetensors") for n in ("one", "two"))
    assert max_difference(one["model"], two["model"]) < 1e-9
    assert_same_history(one_card, two_card)
    # Only rank 0 wrote: weights + card, no resume file left, and the card says how it ran.
    assert sorted(p.name for p in (runs / "adv").iterdir() if p.name.startswith("two")) == ["two.json",
                                                                                          "two.safetensors"]
    assert two_card["distributed"] == {"world_size": 2, "batch_per_rank": 16, "backbone_sync_bn": True}
    assert "distributed" not in one_card and one_card["config_digest"] == two_card["config_digest"]


@pytest.mark.slow
def test_amr_stage_on_two_ranks_matches_one_process(runs):
    (one, one_card), (two, two_card) = (load_checkpoint(runs / "amr" / f"{n}.safetensors") for n in ("one", "two"))
    for name in ("h", "g"):
        assert max_difference(one[name], two[name]) < 1e-6, name
    assert_same_history(one_card, two_card)


@pytest.mark.slow
def test_evaluate_on_two_ranks_gives_the_single_process_numbers(runs):
    """Batches dealt round-robin (3 batches on 2 ranks), each with its own seed: the random
    starts are the ones a single process draws, so the accuracies are equal, not just close."""
    one, two = (json.loads((runs / "evaluate" / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["accuracy"] == one["accuracy"] and set(two["n_images"].values()) == {80}
    assert 0.1 < one["accuracy"]["pgd"] < one["accuracy"]["clean"]  # not a trivial 0 = 0
    assert not (runs / "evaluate" / "two.state.json").exists()
