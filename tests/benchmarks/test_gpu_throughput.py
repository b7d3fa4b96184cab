"""benchmarks/gpu_throughput.py runs on the CPU too (a smoke run on a tiny batch)."""
from __future__ import annotations

import json
import sys

import pytest

from benchmarks import gpu_throughput


def test_smoke_run_writes_steps_ratios_and_stage_estimates(tmp_path, monkeypatch):
    out = tmp_path / "gpu_throughput_cpu.json"
    monkeypatch.setattr(sys, "argv", ["gpu_throughput.py", "--device", "cpu", "--backbone", "lite", "--size", "16",
                                      "--batch-size", "2", "--iters", "1", "--warmup", "0", "--out", str(out)])
    gpu_throughput.main()
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["amp"] is False and result["channels_last"] is False
    assert set(result["steps"]) == {"forward", "fwd_bwd", "pgd10", "inversion10", "amr_step", "cafe_step"}
    for step in result["steps"].values():
        assert step["images_per_s"] == pytest.approx(2 / step["seconds_per_batch"])
    assert result["steps"]["fwd_bwd"]["vs_fwd_bwd"] == 1.0
    assert all(value > 0 for value in result["ratios"].values())
    stages = {row["stage"]: row for row in result["estimates"]}
    assert stages["adv"]["epochs"] == 30 and stages["adv"]["train_images"] == 45_000
    assert stages["adv"]["hours_8_devices_ideal"] == pytest.approx(stages["adv"]["hours_1_device"] / 8)
    text = out.with_suffix(".md").read_text()
    assert "min on 8 (ideal)" in text and "whole pipeline" in text
    out.with_suffix(".md").unlink()
    monkeypatch.setattr(sys, "argv", ["gpu_throughput.py", "--markdown-from", str(out)])
    gpu_throughput.main()
    assert out.with_suffix(".md").read_text() == text, "the .md is a function of the JSON alone"
