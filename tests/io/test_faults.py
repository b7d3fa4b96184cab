"""Faults: a training process killed with SIGKILL mid-epoch resumes to the same result, and a
failing disk never damages the checkpoint already there."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cafe_core.cli import main as cli_main
from cafe_core.io.checkpoints import load_backbone, save_checkpoint

from tests.conftest import CARD, make_lite, torch_threads

ROOT = Path(__file__).resolve().parents[2]


def train_args(out: Path) -> list[str]:
    return ["train", "--stage", "adv", "--limit", "1024", "--threads", "1", "--quiet", "--out", str(out),
            "--set", "stages.adv.epochs=2", "--set", "stages.adv.val_adv_images=50", "--set", "stages.adv.val_steps=2",
            "--set", "n_val=500"]


def train_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "cafe_core", *train_args(out)]


@pytest.mark.slow
@pytest.mark.usefixtures("fashion")
def test_sigkill_mid_epoch_then_resume_matches_an_unbroken_run(tmp_path):
    # The unbroken run goes on beside the one that is killed (one thread each: the 2 cores both work).
    straight = tmp_path / "a" / "adv.safetensors"
    unbroken = subprocess.Popen(train_command(straight), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    broken = tmp_path / "b" / "adv.safetensors"
    resume = broken.with_suffix(".resume.safetensors")
    process = subprocess.Popen(train_command(broken), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not resume.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert resume.exists(), "epoch 1 should have written its resume file"
    time.sleep(1.0)  # well inside epoch 2 (1,024 images at ~300 images/s on one thread)
    assert process.poll() is None, "the run must still be in epoch 2 when it is killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not broken.exists(), "no final checkpoint from a killed run"
    leftovers = [p.name for p in broken.parent.iterdir() if p.name not in ("adv.resume.safetensors",)]
    assert leftovers == [] or all(p.startswith(".") for p in leftovers)
    with torch_threads():  # the resumed run in this process (one process start fewer; --threads 1 as the others)
        assert cli_main(train_args(broken)) == 0
    assert unbroken.wait(timeout=600) == 0, unbroken.stderr.read()
    a = json.loads(straight.with_suffix(".json").read_text())
    b = json.loads(broken.with_suffix(".json").read_text())
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(b["history"]) == strip(a["history"]) and b["metrics"] == {**a["metrics"], "seconds": b["metrics"]["seconds"]}
    net_a, _ = load_backbone(straight)
    net_b, _ = load_backbone(broken)
    for key, value in net_a.state_dict().items():
        torch.testing.assert_close(net_b.state_dict()[key], value, rtol=0, atol=0)
    assert not resume.exists(), "the resume file is removed once the run completes"


def test_full_disk_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    weights = tmp_path / "adv.safetensors"
    first = save_checkpoint(weights, {"model": make_lite(0)}, dict(CARD, stage="adv"))
    import cafe_core.io.checkpoints as checkpoints

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "replace", full_disk)
    with pytest.raises(OSError, match=f"cannot write checkpoint adv.safetensors in {tmp_path}.*No space left.*unchanged"):
        save_checkpoint(weights, {"model": make_lite(1)}, dict(CARD, stage="adv"))
    monkeypatch.undo()
    net, card = load_backbone(weights)  # verifies the sha256 of the weights against the card
    assert card["sha256"] == first["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adv.json", "adv.safetensors"], "no staging files left"


def test_read_only_folder_gives_a_clear_error(tmp_path, monkeypatch):
    weights = tmp_path / "adv.safetensors"
    save_checkpoint(weights, {"model": make_lite(0)}, dict(CARD, stage="adv"))
    import cafe_core.io.serialization as serialization

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(serialization.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match="Read-only file system.*previous checkpoint is unchanged"):
        save_checkpoint(weights, {"model": make_lite(1)}, dict(CARD, stage="adv"))
    monkeypatch.undo()
    load_backbone(weights)
