"""benchmarks/cpu_gpu_agreement.py: image-by-image agreement of CPU- and GPU-stored results."""
from __future__ import annotations

import json

import pytest

from benchmarks.cpu_gpu_agreement import compare_state

GPU = "NVIDIA H100 80GB HBM3 x1, cuDNN TF32 on"


def entry(batches: dict[str, list[int]], machine: str | None) -> dict:
    out = {"batches": batches, "seconds": 1.0}
    if machine is not None:
        out["computed_on"] = [machine]
    return out


def test_agreement_is_counted_on_the_images_both_machines_cover():
    state = {
        "sha256": "x",
        # CPU (stored before provenance was recorded): 6 images in batches of 3.
        json.dumps(["fgsm", 0.1, 0, None, 3]): entry({"0": [1, 1, 0], "1": [1, 0, 0]}, None),
        # GPU: 8 images in one batch; differs from the CPU on image 2 (and covers 2 more).
        json.dumps(["fgsm", 0.1, 0, None, 8]): entry({"0": [1, 1, 1, 1, 0, 0, 1, 1]}, GPU),
        # Only on the GPU: no comparison.
        json.dumps(["cw", 0.1, 0, 100, 8]): entry({"0": [1] * 8}, GPU),
        # A mixed entry cannot be attributed to one machine.
        json.dumps(["pgd", 0.1, 0, 30, 8]): {"batches": {"0": [1] * 8}, "seconds": 1.0,
                                             "computed_on": ["CPU (x86_64)", GPU]},
    }
    (record,) = compare_state(state)
    assert record["attack"] == "fgsm" and record["n"] == 6 and record["same_verdict"] == 5
    assert record["cpu_acc"] == pytest.approx(3 / 6) and record["gpu_acc"] == pytest.approx(4 / 6)
    assert record["ci95_gpu_minus_cpu"][0] <= 1 / 6 <= record["ci95_gpu_minus_cpu"][1]
    assert record["gpu"] == GPU and record["cpu"] == "CPU (x86_64)"
