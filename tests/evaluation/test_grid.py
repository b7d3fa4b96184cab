"""The robustness grid: exact on models whose answer is known, statistics by hand, and a masking
check that fires on a deliberately gradient-masked model and stays quiet on its honest twin."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cafe_core.io.checkpoints import read_card
from cafe_core.data.datasets import ImageTensors
from cafe_core.evaluation.evaluate import evaluate_attacks
from cafe_core.defenses.cafe_mode import CafeMode
from cafe_core.evaluation.grid import RobustnessGrid, build_rows, evaluate_grid
from cafe_core.evaluation.grid_markdown import robustness_markdown
from cafe_core.evaluation.grid_rows import GridRow, grid_models
from cafe_core.evaluation.grid_settings import COLUMNS, GridSettings
from cafe_core.evaluation.masking import masking_check
from cafe_core.evaluation.statistics import claim_check, paired_bootstrap_ci, worst_case

LEVELS = 10


def level_images(n: int = 30, size: int = 8) -> ImageTensors:
    """Flat grey images at one of 10 levels k/9; the label is k (levels are 0.111 apart)."""
    labels = torch.arange(n) % LEVELS
    values = torch.round(labels.float() / (LEVELS - 1) * 255).to(torch.uint8)
    images = values.view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()
    return ImageTensors(images, labels, [str(k) for k in range(LEVELS)])


class LevelReader(nn.Module):
    """Nearest-level classifier of the mean pixel: differentiable; with ``masked`` its input is
    rounded to 8 bits first, which gives the same answers but a zero gradient (the classic
    gradient-masking mistake)."""

    num_classes = LEVELS

    def __init__(self, masked: bool = False) -> None:
        super().__init__()
        self.masked = masked
        self.scale = nn.Parameter(torch.tensor(100.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked:
            x = torch.round(x * 255) / 255
        mean = x.flatten(1).mean(1, keepdim=True)
        centres = torch.arange(LEVELS, dtype=x.dtype) / (LEVELS - 1)
        return -self.scale * (mean - centres).abs()


class Constant(nn.Module):
    """Always answers class 3, whatever the input (10% on a balanced set)."""

    num_classes = LEVELS

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), LEVELS) + self.w * x.flatten(1).sum(1, keepdim=True)
        out[:, 3] += 1.0
        return out


ALL = ["clean", "fgsm", "pgd", "cw", "apgd_ce", "apgd_dlr", "autoattack", "square"]
FEW_STEPS = {"pgd": 10, "cw": 10, "apgd_ce": 10, "apgd_dlr": 10, "autoattack": 10, "square": 100}


def test_a_model_out_of_every_attacks_reach_scores_one_and_a_constant_one_a_tenth():
    data = level_images(30)
    # eps 0.03 < half the level spacing (0.055): no attack can move the mean across a boundary.
    perfect = evaluate_attacks(LevelReader(), data, ALL, 0.03, steps=FEW_STEPS, progress=False)
    assert perfect["accuracy"] == {name: 1.0 for name in ALL}
    constant = evaluate_attacks(Constant(), data, ALL, 0.03, steps=FEW_STEPS, progress=False)
    assert constant["accuracy"] == {name: pytest.approx(0.1) for name in ALL}


def test_an_honest_attack_breaks_the_level_reader_once_eps_crosses_a_boundary():
    data = level_images(30)
    result = evaluate_attacks(LevelReader(), data, ["pgd", "square"], 0.2, steps=FEW_STEPS, progress=False)
    assert result["accuracy"]["pgd"] == 0.0
    assert result["accuracy"]["square"] < 0.2


def grid_on(model: nn.Module) -> dict:
    grid = RobustnessGrid(level_images(30), 0.2, GridSettings.from_recipe(batch_size=30, steps=FEW_STEPS),
                          curve_eps=[0.02, 0.05, 0.1, 0.2, 0.4])
    return grid.evaluate_model(model, "sha", "toy", phases=("fast", "curves"))


def test_masking_check_fires_on_a_gradient_masked_model_and_not_on_its_honest_twin():
    masked = grid_on(LevelReader(masked=True))
    assert masked["accuracy"]["pgd"] == 1.0, "zero gradients: PGD never leaves its random start"
    assert masked["accuracy"]["square"] < 0.5, "the black-box attack does not need gradients"
    flags = masking_check(masked["accuracy"], masked["curve"])["flags"]
    assert "blackbox_beats_whitebox" in flags
    assert "large_eps_not_near_zero:pgd" in flags
    honest = grid_on(LevelReader(masked=False))
    assert honest["curve"]["accuracy"]["pgd"][-1] == 0.0
    assert masking_check(honest["accuracy"], honest["curve"]) == {"flags": [], "suspicious": False,
                                                                  "tolerance": 0.02}


def test_masking_flags_by_hand():
    assert masking_check({"fgsm": 0.5, "pgd": 0.7})["flags"] == ["fgsm_beats_pgd"]
    curve = {"accuracy": {"pgd": [0.9, 0.8, 0.85, 0.3]}}
    assert masking_check({}, curve)["flags"] == ["not_decreasing_with_eps:pgd", "large_eps_not_near_zero:pgd"]
    assert masking_check({"pgd": 0.7, "square": 0.69}, {"accuracy": {"pgd": [0.9, 0.5, 0.0]}})["flags"] == []


def test_paired_bootstrap_by_hand():
    same = [1, 0, 1, 1, 0] * 20
    assert paired_bootstrap_ci(same, same) == (0.0, 0.0)
    assert paired_bootstrap_ci([1] * 50, [0] * 50) == (1.0, 1.0)
    # 100 images: the row wins on 10, loses on 2 -> mean difference 0.08, clearly above zero.
    row, base = [1] * 100, [1] * 100
    for i in range(10):
        base[i] = 0
    row[50], row[51] = 0, 0
    low, high = paired_bootstrap_ci(row, base, n_boot=4000, seed=1)
    assert 0.0 < low < 0.08 < high < 0.16
    # A normal approximation of the same paired difference agrees within a point.
    diff = np.array(row) - np.array(base)
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert low == pytest.approx(0.08 - 1.96 * se, abs=0.012) and high == pytest.approx(0.08 + 1.96 * se, abs=0.012)
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap_ci([1, 0], [1])


def test_worst_case_needs_every_attack_on_the_shared_images():
    correct = {"fgsm": [1, 1, 1, 0], "pgd": [1, 0, 1, 1], "autoattack": [1, 1]}
    assert worst_case(correct) == (0.5, 2)
    assert worst_case({}) == (None, 0)


def fake_result(correct: dict[str, list[int]]) -> dict:
    return {"accuracy": {k: float(np.mean(v)) for k, v in correct.items()},
            "n_images": {k: len(v) for k, v in correct.items()}, "correct": correct, "seconds": {},
            "curve": {"eps": [], "accuracy": {}, "n_images": {}}}


def test_one_list_of_rows_one_label_and_the_cafe_mode_in_each_file_format(tmp_path):
    from cafe_core.evaluation.names import cafe_setting, defense_name, network_name, short_defense_name
    from cafe_core.training.pipeline import pipeline_steps

    labels = ["defense_adv", "defense_adv-cafe", "defense_adv-control-h0", "defense_trades", "defense_trades-cafe",
              "defense_mart", "defense_mart-cafe", "defense_awp", "defense_awp-cafe", "defense_help", "defense_help-cafe"]
    assert [row.label for row in grid_models(tmp_path)] == labels
    assert [GridRow.from_label(label).label for label in labels] == labels
    steps = pipeline_steps({"stages": {"defense": {}}})
    assert [step.name for step in steps if step.kind == "train"] == labels, "the pipeline trains the grid's rows"
    assert GridRow.from_label("defense_adv-control-h0") == GridRow("adv", CafeMode.CONTROL_H0)
    # The encodings on disk: robustness JSON rows, checkpoint cards, file stems.
    assert [m.to_json() for m in CafeMode] == [False, True, "control-h0"]
    assert [m.to_card() for m in CafeMode] == [None, "cafe", "control-h0"]
    assert [m.suffix for m in CafeMode] == ["", "-cafe", "-control-h0"]
    assert all(CafeMode.from_json(m.to_json()) is m and CafeMode.parse(m.to_card()) is m for m in CafeMode)
    with pytest.raises(ValueError, match="robustness JSON"):
        CafeMode.from_json(None)
    with pytest.raises(ValueError, match="unknown cafe mode"):
        CafeMode.parse("inoculate")
    with pytest.raises(ValueError, match="not both"):
        CafeMode.from_flags(True, True)
    assert CafeMode.from_flags(False, True) is CafeMode.CONTROL_H0 and CafeMode.from_flags(False, False) is CafeMode.BASELINE
    # Display names, from any encoding.
    assert [defense_name("trades", m) for m in (False, True, "control-h0")] == \
        ["TRADES", "TRADES + CAFE", "TRADES + CAFE with h = 0 (control)"]
    assert network_name("defense_adv-control-h0") == "ADV + CAFE with h = 0 (control)" and network_name("x") == "x"
    assert [short_defense_name("adv", m) for m in CafeMode] == ["ADV", "ADV+CAFE", "ADV control-h0"]
    assert [cafe_setting(m) for m in CafeMode] == ["no", "yes", "control-h0"]


def test_the_eps_curves_are_one_series_drawn_by_both_renderers(tmp_path):
    """The committed grid: every row's PGD and AutoAttack curve, in row order, with the same points
    in the app's plotly figure and the README's PNG (the series are built once, in curves.py)."""
    from pathlib import Path

    from cafe_core.evaluation.curves import curve_series, curves_png
    from cafe_core.serving.figures import robustness_curves

    result = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results"
                         / "robustness_fashion_lite.json").read_text())
    expected = [(r["defense"], r["cafe"], attack, [255 * e for e in r["eps_curve"]["eps"][:len(values)]],
                 [None if v is None else 100 * v for v in values])
                for r in result["rows"] for attack in ("pgd", "autoattack")
                if (values := r["eps_curve"]["accuracy"].get(attack))]
    assert len(expected) == 22, "11 rows x (PGD, AutoAttack)"
    series = curve_series(result)
    assert [(s.defense, s.mode.to_json(), s.attack, s.eps_255, s.accuracy) for s in series] == expected
    figure = robustness_curves(result)
    assert [(list(t.x), list(t.y)) for t in figure.data] == [(e[3], e[4]) for e in expected]
    assert figure.data[1].name == "ADV, autoattack" and figure.data[2].name == "ADV + CAFE, pgd"
    # The app's figure looks like the README's picture: line style per CAFE mode, marker per attack,
    # colour per defense.
    assert [(t.line.dash, t.marker.symbol) for t in figure.data[:3]] == [("dot", "circle"), ("dot", "square"),
                                                                          ("solid", "circle")]
    assert len({t.line.color for t in figure.data}) == 5
    assert None in figure.data[1].y, "AutoAttack skips 0.25 x eps: a gap, not a zero"
    png = curves_png(result, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert curves_png({"rows": [{"defense": "adv", "cafe": False, "eps_curve": {"accuracy": {}}}]},
                      tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_rows_carry_paired_ci_against_their_own_baseline_and_the_claim_is_checked(tmp_path):
    models = grid_models(tmp_path, ["adv", "trades"])
    assert [m.label for m in models] == ["defense_adv", "defense_adv-cafe", "defense_adv-control-h0",
                                         "defense_trades", "defense_trades-cafe"]
    n = 400
    base = {"clean": [1] * n, "pgd": [1] * 300 + [0] * 100, "autoattack": [1] * 280 + [0] * 120}
    better = {"clean": [1] * n, "pgd": [1] * 330 + [0] * 70, "autoattack": [1] * 310 + [0] * 90}
    results = {"defense_adv": fake_result(base), "defense_adv-cafe": fake_result(better),
               "defense_adv-control-h0": fake_result(base), "defense_trades": fake_result(base),
               "defense_trades-cafe": fake_result(base)}
    rows = build_rows(results, models)
    assert [r["cafe"] for r in rows] == [False, True, "control-h0", False, True]
    assert "ci95" not in rows[0]
    cafe = rows[1]
    assert cafe["delta"]["autoattack"] == pytest.approx(30 / n)
    low, high = cafe["ci95"]["autoattack"]
    assert 0 < low < 30 / n < high
    assert rows[2]["ci95"]["pgd"] == [0.0, 0.0]
    assert cafe["worst"] == pytest.approx(310 / n) and cafe["n"]["worst"] == n
    claim = claim_check(rows)
    assert claim["per_defense"]["adv"]["holds"] and not claim["per_defense"]["trades"]["holds"]
    assert claim["holds_for"] == 1 and not claim["met"]
    assert claim["adv_cafe_vs_control"]["autoattack"] == {"cafe_delta": pytest.approx(0.075), "control_delta": 0.0}
    table = robustness_markdown({"rows": rows, "dataset": "toy", "eps": 0.1, "seed": 0,
                                 "n_images": {c: n for c in COLUMNS}})
    assert "| adv | yes |" in table and "[+" in table


def test_grid_on_checkpoints_writes_the_json_resumes_and_redoes_a_retrained_model(tmp_path, fashion):
    from cafe_core.io.checkpoints import save_checkpoint

    from tests.conftest import CARD, make_lite

    folder = tmp_path / "ckpt"
    for seed, label in enumerate(["defense_adv", "defense_adv-cafe", "defense_adv-control-h0"]):
        save_checkpoint(folder / f"{label}.safetensors", {"model": make_lite(seed)}, dict(CARD, stage="defense"))
    config = {"name": "toy", "dataset": "fashion-mnist", "backbone": "lite", "eps": 0.1,
              "checkpoint_dir": str(folder)}
    data = fashion[2].subset(torch.arange(24))
    out = tmp_path / "results" / "robustness_toy.json"
    kwargs = dict(phases=("fast", "curves"), out=out, limits={"square": 12}, steps={"pgd": 3, "square": 20},
                  curve_n={"pgd": 12}, curve_attacks=("pgd",), batch_size=12, log=lambda _: None)
    first = evaluate_grid(config, data, **kwargs)
    saved = json.loads(out.read_text())
    assert [(r["defense"], r["cafe"]) for r in saved["rows"]] == [("adv", False), ("adv", True), ("adv", "control-h0")]
    assert saved["n_images"]["pgd"] == 24 and saved["n_images"]["autoattack"] == 0
    assert saved["rows"][1]["ci95"]["pgd"][0] <= saved["rows"][1]["delta"]["pgd"] <= saved["rows"][1]["ci95"]["pgd"][1]
    assert len(saved["rows"][0]["eps_curve"]["accuracy"]["pgd"]) == 6
    assert {"rows", "eps", "n_images", "seed", "versions"} <= set(saved)
    assert out.with_suffix(".md").read_text().startswith("Robust accuracy")
    assert "ADV-CAFE minus the h = 0 control" in out.with_suffix(".md").read_text()
    assert saved["adv_cafe_minus_control"]["pgd"]["n"] == 24
    assert (out.parent / "robustness_toy_curves.png").read_bytes()[:4] == b"\x89PNG"
    # Resume: a poisoned state batch is read back, not recomputed.
    state = out.parent / "state" / "robustness_toy" / "defense_adv.json"
    stored = json.loads(state.read_text())
    key = next(k for k in stored if k != "sha256" and json.loads(k)[0] == "pgd" and json.loads(k)[1] == 0.1)
    assert sum(stored[key]["batches"]["0"]) < 12, "an untrained model is not robust"
    stored[key]["batches"]["0"] = [1] * 12
    state.write_text(json.dumps(stored))
    again = evaluate_grid(config, data, **kwargs)
    assert again["rows"][0]["pgd"] == pytest.approx((12 + sum(stored[key]["batches"]["1"])) / 24)
    assert again["rows"][1]["pgd"] == first["rows"][1]["pgd"]
    # A later run of another phase keeps the finished columns (read from the state, not recomputed).
    later = {**kwargs, "steps": {"pgd": 3, "square": 20, "cw": 2, "apgd_ce": 2, "apgd_dlr": 2},
             "limits": {"square": 12, "cw": 12, "apgd_ce": 12, "apgd_dlr": 12}}
    strong = evaluate_grid(config, data, **{**later, "phases": ("strong",)})
    assert strong["rows"][0]["pgd"] == again["rows"][0]["pgd"] and strong["rows"][0]["n"]["cw"] == 12
    assert strong["rows"][0]["eps_curve"]["accuracy"]["pgd"] == again["rows"][0]["eps_curve"]["accuracy"]["pgd"]
    assert strong["rows"][0]["n"]["worst"] == 12
    # A run cut after its first model still writes every row (the others from the state).
    def cut(message):
        raise KeyboardInterrupt(message)

    with pytest.raises(KeyboardInterrupt):
        evaluate_grid(config, data, **{**later, "phases": ("autoattack",), "log": cut})
    after_cut = json.loads(out.read_text())
    assert [r["pgd"] for r in after_cut["rows"]] == [r["pgd"] for r in strong["rows"]]
    assert [r["n"]["cw"] for r in after_cut["rows"]] == [12, 12, 12]
    assembled = evaluate_grid(config, data, **{**later, "phases": ()})
    assert [r["pgd"] for r in assembled["rows"]] == [r["pgd"] for r in strong["rows"]]
    # Retraining (new weights, new sha256) evaluates the new checkpoint afresh in a file of its own;
    # the old checkpoint's results are never deleted by the grid, not even by assembling the table.
    old_state = state.read_bytes()
    weights, card = folder / "defense_adv.safetensors", folder / "defense_adv.json"
    old_checkpoint = weights.read_bytes(), card.read_bytes()
    save_checkpoint(weights, {"model": make_lite(7)}, dict(CARD, stage="defense"))
    new_sha = read_card(weights)["sha256"]
    assert new_sha != stored["sha256"]
    state_dir = state.parent
    before = sorted(p.name for p in state_dir.iterdir())
    table = evaluate_grid(config, data, **{**later, "phases": ()})
    assert state.read_bytes() == old_state and sorted(p.name for p in state_dir.iterdir()) == before
    assert table["rows"][0]["sha256"] == new_sha and table["rows"][0]["pgd"] is None  # nothing stored for it yet
    evaluate_grid(config, data, **kwargs)
    assert state.read_bytes() == old_state
    fresh = state_dir / f"defense_adv@{new_sha[:12]}.json"
    retrained = json.loads(fresh.read_text())
    assert retrained["sha256"] == new_sha and retrained[key]["batches"]["0"] != [1] * 12
    # Putting the old checkpoint back finds its results again (the poisoned batch is read, not recomputed).
    weights.write_bytes(old_checkpoint[0])
    card.write_bytes(old_checkpoint[1])
    assert read_card(weights)["sha256"] == stored["sha256"]
    assert evaluate_grid(config, data, **{**later, "phases": ()})["rows"][0]["pgd"] == again["rows"][0]["pgd"]
    assert state.read_bytes() == old_state
    # Only an explicit command removes the results of a checkpoint that no longer exists.
    from cafe_core.cli import main

    (tmp_path / "toy.toml").write_text(f'name = "toy"\ndataset = "fashion-mnist"\nbackbone = "lite"\neps = 0.1\n'
                                       f'checkpoint_dir = "{folder.as_posix()}"\nn_val = 5000\nseed = 0\n')
    prune = ["evaluate", "--grid", str(tmp_path / "toy.toml"), "--out", str(out), "--prune-state"]
    assert main(prune) == 0
    assert fresh.is_file() and state.is_file()  # a dry run by default
    assert main(prune + ["--yes"]) == 0
    assert not fresh.is_file() and state.read_bytes() == old_state
    assert sorted(p.name for p in state_dir.iterdir()) == before
    # An assemble-only run records the command that computes the numbers, and its own beside it.
    assert main(["evaluate", "--grid", str(tmp_path / "toy.toml"), "--n", "8", "--out", str(out), "--phases", "",
                 "--quiet"]) == 0
    recorded = json.loads(out.read_text())
    assert recorded["command"] == f"python -m cafe_core evaluate --grid {(tmp_path / 'toy.toml').as_posix()} --n 8"
    assert recorded["command_this_run"].startswith("python -m cafe_core")  # sys.argv: here pytest's


def test_worst_case_difference_uses_only_the_attacks_both_rows_have_run(tmp_path):
    """A baseline with AutoAttack measured and a CAFE twin without it: the worst-case CI must not
    compare the baseline's worst over 3 attacks with the twin's worst over 2 (a spurious gain)."""
    models = grid_models(tmp_path, ["adv"])[:2]
    n = 400
    same = {"clean": [1] * n, "fgsm": [1] * 320 + [0] * 80, "pgd": [1] * 300 + [0] * 100}
    base = {**same, "autoattack": [1] * 200 + [0] * 200}  # AutoAttack ran on the baseline only
    rows = build_rows({"defense_adv": fake_result(base), "defense_adv-cafe": fake_result(dict(same))}, models)
    cafe = rows[1]
    assert cafe["delta"]["worst"] == pytest.approx(0.0)
    assert cafe["ci95"]["worst"] == pytest.approx([0.0, 0.0])
    assert "autoattack" not in cafe["ci95"]


def test_grid_rows_can_be_chosen_attacks_batched_apart_and_provenance_is_kept(tmp_path, fashion):
    """--models keeps one row; a per-attack batch size keys that attack's state; each column says
    which machine computed it; the other columns get the claim test too."""
    from cafe_core.io.checkpoints import save_checkpoint
    from cafe_core.evaluation.evaluate import compute_label

    from tests.conftest import CARD, make_lite

    folder = tmp_path / "ckpt"
    for seed, label in enumerate(["defense_adv", "defense_adv-cafe"]):
        save_checkpoint(folder / f"{label}.safetensors", {"model": make_lite(seed)}, dict(CARD, stage="defense"))
    config = {"name": "toy", "dataset": "fashion-mnist", "backbone": "lite", "eps": 0.1, "checkpoint_dir": str(folder)}
    data = fashion[2].subset(torch.arange(24))
    out = tmp_path / "results" / "robustness_toy.json"
    kwargs = dict(out=out, limits={"square": 12}, steps={"pgd": 2, "square": 5}, batch_size=24,
                  batch_sizes={"pgd": 8}, log=lambda _: None)
    with pytest.raises(KeyError, match="unknown grid row"):
        evaluate_grid(config, data, phases=("fast",), labels=["defense_nope"], **kwargs)
    only = evaluate_grid(config, data, phases=("fast",), labels=["defense_adv-cafe"], **kwargs)
    assert [(r["defense"], r["cafe"]) for r in only["rows"]] == [("adv", True)]
    assert not (out.parent / "state" / "robustness_toy" / "defense_adv.json").exists()
    stored = json.loads((out.parent / "state" / "robustness_toy" / "defense_adv-cafe.json").read_text())
    pgd_keys = [json.loads(k) for k in stored if k != "sha256" and json.loads(k)[0] == "pgd"]
    assert [k[4] for k in pgd_keys] == [8] and len(stored[json.dumps(pgd_keys[0])]["batches"]) == 3
    assert only["computed_on"]["pgd"] == [compute_label("cpu")] and only["batch_sizes"] == {"pgd": 8}
    both = evaluate_grid(config, data, phases=("fast",), **kwargs)
    assert both["claim_other_columns"]["pgd"]["of"] == 1
    text = out.with_suffix(".md").read_text()
    assert "Computed on: clean, fgsm, pgd: CPU" in text and "The same test on the other columns" in text


def test_subset_check_compares_autoattack_images_with_all_images():
    """CAFE wins on the first 100 images (where AutoAttack ran) and loses the gain over all 1,000:
    the check shows both differences, so a subset gain is not mistaken for a general one."""
    from cafe_core.evaluation.statistics import paired_difference, subset_check

    base = {"correct": {"pgd": [0] * 20 + [1] * 980, "autoattack": [0] * 10 + [1] * 90}}
    row = {"correct": {"pgd": [1] * 20 + [1] * 960 + [0] * 20, "autoattack": [1] * 100}}
    differences = paired_difference(row, base)
    check = subset_check(row, base, differences)
    assert set(check) == {"pgd"}
    assert check["pgd"]["n_subset"] == 100 and check["pgd"]["n_all"] == 1000
    assert check["pgd"]["delta_subset"] == pytest.approx(0.20) and check["pgd"]["delta_all"] == pytest.approx(0.0)
    assert check["pgd"]["ci95_subset"][0] > 0
    assert subset_check({"correct": {"pgd": [1] * 10}}, {"correct": {"pgd": [1] * 10}}, {}) == {}


def test_a_finished_grid_is_up_to_date_until_a_setting_a_checkpoint_or_a_row_changes(tmp_path, fashion):
    """The pipeline skips the evaluation only when the JSON says nothing is pending, was assembled
    with the recipe's [evaluation] settings and has every checkpoint's current sha256."""
    from cafe_core.io.checkpoints import save_checkpoint
    from cafe_core.evaluation.grid import grid_stale_reason

    from tests.conftest import CARD, make_lite

    folder = tmp_path / "ckpt"
    for seed, label in enumerate(["defense_adv", "defense_adv-cafe"]):
        save_checkpoint(folder / f"{label}.safetensors", {"model": make_lite(seed)}, dict(CARD, stage="defense"))
    evaluation = {"batch_size": 8, "limits": {"square": 4, "autoattack": 4, "cw": 4, "apgd_ce": 4, "apgd_dlr": 4},
                  "steps": {"pgd": 2, "square": 5, "cw": 2, "apgd_ce": 2, "apgd_dlr": 2, "autoattack": 2},
                  "curve_n": {"pgd": 4, "autoattack": 4}, "curve_multipliers": {"autoattack": [1.0, 4.0]}}
    config = {"name": "toy", "dataset": "fashion-mnist", "backbone": "lite", "eps": 0.1,
              "checkpoint_dir": str(folder), "evaluation": evaluation}
    data = fashion[2].subset(torch.arange(8))
    out = tmp_path / "results" / "robustness_toy.json"
    assert grid_stale_reason(config, out) == "no robustness result yet"
    # The settings the CLI and the pipeline run with: flags over the recipe's tables over the defaults.
    settings = GridSettings.from_recipe(config)
    assert settings.limits["autoattack"] == 4 and settings.steps["autoattack"] == 2 and settings.batch_size == 8
    assert settings.curve_multipliers == {"autoattack": [1.0, 4.0]} and settings.batch_size_of("pgd") == 8
    flagged = GridSettings.from_recipe(config, limits={"autoattack": 2}, batch_sizes={"autoattack": 4})
    assert flagged.limits == {**evaluation["limits"], "autoattack": 2} and flagged.batch_sizes == {"autoattack": 4}
    assert flagged.batch_size_of("autoattack") == 4 and flagged.batch_size_of("pgd") == 8
    assert GridSettings.from_recipe({"eps": 0.1}) == GridSettings(), "no [evaluation] table: the defaults"
    assert GridSettings().limits["autoattack"] == 1000 and GridSettings().steps["pgd"] == 30
    # The command the grid JSON records names only what differs from the recipe, and parses back to
    # the same settings (it reproduces every number, whatever this run did).
    assert settings.command(config) == "python -m cafe_core evaluate --grid toy"
    command = flagged.command(config, n_images=8)
    assert command == ("python -m cafe_core evaluate --grid toy --n 8 --limit autoattack=2 "
                       "--attack-batch-size autoattack=4")
    from cafe_core.cli import build_parser
    from cafe_core.cli.common import pairs

    args = build_parser().parse_args(command.split()[3:])
    assert args.n == 8 and GridSettings.from_recipe(config, limits=pairs(args.limit),
                                                    batch_sizes=pairs(args.attack_batch_size)) == flagged
    with pytest.raises(TypeError, match="not both"):
        evaluate_grid(config, data, settings, steps={"pgd": 1})
    kwargs = dict(out=out, log=lambda _: None)
    partial = evaluate_grid(config, data, settings, phases=("fast",), **kwargs)
    assert not partial["complete"]
    assert {"row": "defense_adv", "attack": "autoattack", "eps": 0.1, "images": 0, "of": 4} in partial["pending"]
    assert len([p for p in partial["pending"] if p["row"] == "defense_adv" and p["attack"] == "pgd"]) == 5, \
        "the PGD curve point at the grid's eps is the PGD column's first images; the other 5 radii are pending"
    assert "still to compute" in grid_stale_reason(config, out)
    assert "autoattack at eps 0.1: adv 0/4, adv-cafe 0/4; " in out.with_suffix(".md").read_text()
    assert "autoattack curve at eps 0.4: adv 0/4, adv-cafe 0/4." in out.with_suffix(".md").read_text()
    assert "autoattack curve at eps 0.025" not in out.with_suffix(".md").read_text(), "not asked for"
    done = evaluate_grid(config, data, **kwargs)  # no settings: the recipe's, as the pipeline runs it
    assert done["complete"] and done["pending"] == []
    assert {k: done[k] for k in settings.to_json()} == settings.to_json()
    aa_curve = done["rows"][0]["eps_curve"]["accuracy"]["autoattack"]
    assert [v is None for v in aa_curve] == [True, True, False, True, True, False]
    assert aa_curve[2] == done["rows"][0]["autoattack"], "the point at eps is the AutoAttack column's images"
    assert [r["sha256"] for r in done["rows"]] == [read_card(folder / f"{m}.safetensors")["sha256"]
                                                  for m in ("defense_adv", "defense_adv-cafe")]
    assert grid_stale_reason(config, out) is None
    assert "Complete: every column" in out.with_suffix(".md").read_text()
    changed = {**config, "evaluation": {**evaluation, "curve_n": {"pgd": 8, "autoattack": 4}}}
    assert grid_stale_reason(changed, out) == "[evaluation] settings changed: curve_n"
    six = {**config, "evaluation": {k: v for k, v in evaluation.items() if k != "curve_multipliers"}}
    assert grid_stale_reason(six, out) == "[evaluation] settings changed: curve_multipliers"
    save_checkpoint(folder / "defense_adv-control-h0.safetensors", {"model": make_lite(5)}, dict(CARD, stage="defense"))
    assert grid_stale_reason(config, out) == "no row for defense_adv-control-h0"
    (folder / "defense_adv-control-h0.safetensors").unlink()
    (folder / "defense_adv-control-h0.json").unlink()
    (folder / "defense_adv.safetensors").rename(tmp_path / "kept.safetensors")
    assert grid_stale_reason(config, out) == "defense_adv has a row but no checkpoint"
    save_checkpoint(folder / "defense_adv.safetensors", {"model": make_lite(7)}, dict(CARD, stage="defense"))
    assert grid_stale_reason(config, out) == "defense_adv changed since it was evaluated"


def test_state_files_are_keyed_by_checkpoint_sha256_and_stale_ones_only_listed(tmp_path):
    from cafe_core.evaluation.grid_state import find_state, prune_candidates, state_path

    first, second = "a" * 64, "b" * 64
    assert state_path(tmp_path, "defense_adv", first) == tmp_path / "defense_adv.json"
    (tmp_path / "defense_adv.json").write_text(json.dumps({"sha256": first}))
    assert state_path(tmp_path, "defense_adv", first) == tmp_path / "defense_adv.json"
    keyed = tmp_path / f"defense_adv@{'b' * 12}.json"
    assert state_path(tmp_path, "defense_adv", second) == keyed and find_state(tmp_path, "defense_adv", second) is None
    keyed.write_text(json.dumps({"sha256": second}))
    (tmp_path / "defense_mart.json").write_text(json.dumps({"sha256": first}))
    assert find_state(tmp_path, "defense_adv", second) == keyed
    assert find_state(tmp_path, "defense_adv", first) == tmp_path / "defense_adv.json"
    reasons = {state.path.name: reason for state, reason in prune_candidates(tmp_path, {"defense_adv": second})}
    assert reasons == {"defense_adv.json": "checkpoint aaaaaaaaaaaa replaced by bbbbbbbbbbbb",
                       "defense_mart.json": "no checkpoint for this row"}
    assert prune_candidates(tmp_path, {"defense_adv": first, "defense_mart": first})[0][0].path == keyed
    assert len(list(tmp_path.iterdir())) == 3  # listing removes nothing
    with pytest.raises(FileExistsError, match="another checkpoint"):  # same first 12 digits, other sha256
        state_path(tmp_path, "defense_adv", "b" * 12 + "c" * 52)
