"""benchmarks/autoattack_budget.py: a stronger AutoAttack budget next to the grid's, on the same images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import autoattack_budget
from tests.conftest import torch_threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_stronger_budget_is_compared_image_by_image_with_the_grid_and_resumes(tmp_path):
    out = tmp_path / "autoattack_budget_fashion_lite.json"
    # In this process (the benchmark's main, as its command line runs it): no second torch start-up.
    command = ["--rows", "defense_adv,defense_adv-cafe", "--n", "2", "--steps", "1", "--batch-size", "2",
               "--threads", "1", "--out", str(out)]
    with torch_threads():
        autoattack_budget.main(command)
    result = json.loads(out.read_text())
    grid_state = ROOT / "benchmarks" / "results" / "state" / "robustness_fashion_lite"
    assert [r["row"] for r in result["rows"]] == ["defense_adv", "defense_adv-cafe"]
    for row in result["rows"]:
        # The grid's verdicts are read from its stored state: the first 2 images of its AutoAttack column.
        state = json.loads((grid_state / f"{row['row']}.json").read_text())
        grid = state[json.dumps(["autoattack", 0.1, 0, 10, 500])]["batches"]["0"][:2]
        # The stronger run's verdicts: its own state beside the JSON (1 iteration, one batch of 2 images).
        own = json.loads((tmp_path / "state" / out.stem / f"{row['row']}.json").read_text())
        batches = own[json.dumps(["autoattack", 0.1, 0, 1, 2])]["batches"]
        strong = [verdict for key in sorted(batches, key=int) for verdict in batches[key]]
        assert len(grid) == len(strong) == 2
        assert row["grid_accuracy"] == sum(grid) / 2 and row["accuracy"] == sum(strong) / 2
        # Image by image: which budget breaks which image.
        assert row["broken_only_by_stronger"] == sum(g == 1 and s == 0 for g, s in zip(grid, strong))
        assert row["broken_only_by_grid"] == sum(s == 1 and g == 0 for g, s in zip(grid, strong))
        assert row["stronger_minus_grid"]["delta"] == (sum(strong) - sum(grid)) / 2
    assert [(p["row"], p["baseline"]) for p in result["pairs"]] == [("defense_adv-cafe", "defense_adv")]
    assert "AA-10 (grid) %" in out.with_suffix(".md").read_text()
    # The stronger run's per-batch state is kept beside the JSON: a second run computes nothing.
    batches = json.loads((tmp_path / "state" / out.stem / "defense_adv.json").read_text())
    assert sum(len(b) for k, v in batches.items() if k != "sha256" for b in v["batches"].values()) == 2
    with torch_threads():
        autoattack_budget.main(command)
    assert [r["seconds"] for r in json.loads(out.read_text())["rows"]] == [r["seconds"] for r in result["rows"]]
