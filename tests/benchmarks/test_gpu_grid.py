"""benchmarks/gpu_grid.py: rounds per row, a real (CPU) run of one row, and the packed state."""
from __future__ import annotations

import json
import tarfile

import pytest

from benchmarks import gpu_grid
from benchmarks.gpu_grid import round_args


def test_round_arguments():
    assert round_args("fast,strong", 10_000) == ["--phases", "fast,strong"]
    assert round_args("fast,strong,autoattack@1000", 10_000) == ["--phases", "fast,strong,autoattack",
                                                                 "--limit", "autoattack=1000"]
    assert round_args("autoattack@all", 10_000) == ["--phases", "autoattack", "--limit", "autoattack=10000"]


@pytest.mark.slow
def test_one_row_runs_its_rounds_and_the_state_comes_back_packed(tmp_path, capsys):
    results = tmp_path / "robustness_fashion_lite.json"
    # The driver in this process (its main, as the command line runs it); each round is a subprocess.
    command = ["--out-dir", str(tmp_path / "out"), "--results", str(results),
               "--models", "defense_adv-cafe,defense_adv", "--parallel", "1", "--rounds", "fast;fast",
               "--budget", "300", "--pack-every", "1",
               "--extra", "--n 16 --batch-size 8 --limit square=8 --steps square=5 --steps pgd=2 --threads 1"]
    assert gpu_grid.main(command) == 0
    stdout = capsys.readouterr().out
    assert "rows with rounds left: none" in stdout
    # One slot: each row finishes its first round before either starts its second.
    done = [line.split()[2:5] for line in stdout.splitlines() if line.endswith("done")]
    assert done == [["defense_adv:", "round", "1/2"], ["defense_adv-cafe:", "round", "1/2"],
                    ["defense_adv:", "round", "2/2"], ["defense_adv-cafe:", "round", "2/2"]], stdout
    with tarfile.open(tmp_path / "out" / "grid_state.tar.gz") as tar:
        names = tar.getnames()
        state = json.load(tar.extractfile("defense_adv-cafe.json"))
    assert "defense_adv-cafe.log" in names and "defense_adv.json" in names and "defense_trades.json" not in names
    pgd = [v for k, v in state.items() if k != "sha256" and json.loads(k)[0] == "pgd"]
    assert len(pgd) == 1 and sum(map(len, pgd[0]["batches"].values())) == 16
    # Each round is its own evaluate command, logged in the row's log.
    log = (tmp_path / "gpu_grid_logs" / "defense_adv-cafe.log").read_text()
    assert log.count("$ ") == 2
    assert all(row["n"]["pgd"] == 16 for row in json.loads(results.read_text())["rows"])
