"""The Explore comparison beyond one model: every defense, attributions, the lesson, and the
report that reproduces a run (``analyze --from-report``)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cafe_core.attacks.registry import build_attack
from cafe_core.causal.attribution import attribute
from cafe_core.io.checkpoints import save_checkpoint
from cafe_core.serving.compare import DefenseSet, compare_defenses, defense_adversarials
from cafe_core.serving.lab import Lab
from cafe_core.serving.lesson import LESSON_TITLES, lesson_step
from cafe_core.serving.report import build_report, compare_numbers, read_report, report_png, rerun_report

from tests.conftest import CARD, make_lite


@pytest.fixture()
def lab_folder(amr_files, toy_model):
    folder = amr_files[0].parent
    for label, net in (("defense_adv", toy_model), ("defense_trades-cafe", make_lite(5))):
        save_checkpoint(folder / f"{label}.safetensors", {"model": net}, dict(CARD, stage="defense"))
    return folder


def test_every_defense_is_attacked_on_its_own_gradients(lab_folder, fashion):
    defenses = DefenseSet(lab_folder)
    assert [m.label for m in defenses.models] == ["defense_adv", "defense_trades-cafe"]
    image, label = fashion[2][0]
    x, y = image[None], torch.tensor([int(label)])
    assert defenses.stacked() is not None, "two lite models are attacked together as one stacked network"
    adversarial = defense_adversarials(defenses, x, int(label), "pgd", 0.1, 5, 3)
    rows = compare_defenses(defenses, x, int(label), int(label), attack="pgd", eps=0.1, steps=5, seed=3)
    assert (adversarial - x).abs().max() <= 0.1 + 1e-6
    for i, (row, net) in enumerate(zip(rows, defenses.networks)):
        with torch.no_grad():
            assert row["adversarial_label"] == int(net(adversarial[i:i + 1]).argmax())
            assert row["clean_label"] == int(net(x).argmax())
            # Its own adversarial image hurts it more than the other model's one does.
            own = torch.nn.functional.cross_entropy(net(adversarial[i:i + 1]), y)
            other = torch.nn.functional.cross_entropy(net(adversarial[1 - i:2 - i]), y)
        assert own > other, f"model {i} was not attacked on its own gradients"
        assert row["adversarial_correct"] == (row["adversarial_label"] == int(label))
    assert rows[1]["defense"] == "trades" and rows[1]["cafe"] is True
    # The attacks that work on subsets of a batch (APGD) run model by model, as before stacking.
    rows = compare_defenses(defenses, x, int(label), int(label), attack="apgd_ce", eps=0.1, steps=5, seed=3)
    for row, net in zip(rows, defenses.networks):
        own = build_attack("apgd_ce", net, 0.1, 5, 3)(x, y)
        with torch.no_grad():
            assert row["adversarial_label"] == int(net(own).argmax())


def test_integrated_gradients_are_complete_and_saliency_is_the_gradient(toy_model, fashion):
    image, label = fashion[2][0]
    x = image[None]
    attr = attribute(toy_model, {"clean": x}, int(label), ig_steps=128)
    with torch.no_grad():
        gap = float(toy_model(x)[0, int(label)] - toy_model(torch.zeros_like(x))[0, int(label)])
    # Completeness: IG sums to f(x) - f(baseline) (up to the Riemann approximation).
    assert float(attr.maps["integrated_gradients"]["clean"].sum()) == pytest.approx(gap, rel=0.05, abs=0.05)
    x_req = x.clone().requires_grad_(True)
    toy_model(x_req)[0, int(label)].backward()
    assert np.allclose(attr.maps["saliency"]["clean"], x_req.grad.abs().sum(1)[0].numpy(), atol=1e-6)
    assert attr.overlays["saliency"]["clean"].shape == (28, 28, 3)
    assert all(p.grad is None for p in toy_model.parameters() if p.grad is None) and not toy_model.training


def test_report_reproduces_and_flags_a_tampered_number(lab_folder, fashion, tmp_path, capsys):
    from cafe_core.cli import main

    lab = Lab(lab_folder)
    image, label = fashion[2][1]
    result, rows = lab.comparison(image[None], int(label), attack="pgd", eps=0.1, steps=3, seed=1, feature_steps=5,
                                 eps_inv=0.05)
    report = build_report(result, rows, str(lab_folder))
    png = report_png(result, rows)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert read_report(path)["settings"]["seed"] == 1
    new, differences = rerun_report(report, lab.bundle, lab.defenses, lab.class_names, 1)
    assert differences == [] and new["numbers"]["predictions"] == report["numbers"]["predictions"]
    assert main(["analyze", "--from-report", str(path), "--checkpoints", str(lab_folder)]) == 0
    assert "reproduced" in capsys.readouterr().out
    report["numbers"]["kl_x1000"]["clean"] += 5.0
    path.write_text(json.dumps(report))
    assert main(["analyze", "--from-report", str(path), "--checkpoints", str(lab_folder)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not a readable JSON report"):
        main(["analyze", "--from-report", str(path), "--checkpoints", str(lab_folder)])


def test_report_with_another_amr_checkpoint_is_refused(lab_folder, fashion, tmp_path):
    lab = Lab(lab_folder)
    image, label = fashion[2][1]
    result, rows = lab.comparison(image[None], int(label), steps=2, feature_steps=2, eps_inv=0.05)
    report = build_report(result, rows)
    report["settings"]["amr_sha256"] = "0" * 64
    from cafe_core.io.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="another AMR-GMM checkpoint"):
        rerun_report(report, lab.bundle, lab.defenses, lab.class_names, 1)


def test_lesson_steps_quote_the_example_numbers(lab_folder, fashion):
    lab = Lab(lab_folder)
    image, label = fashion[2][2]
    result, rows = lab.comparison(image[None], int(label), steps=2, feature_steps=2, eps_inv=0.05)
    texts = [lesson_step(i, result, rows) for i in range(len(LESSON_TITLES))]
    assert result.predictions["natural"].class_name in texts[0]
    assert f"{result.kl_x1000['inversion']:.1f}" in texts[2]
    assert "of 1 baselines" in texts[4]
    with pytest.raises(ValueError):
        lesson_step(7, result, rows)


def test_a_set_whose_amr_belongs_to_another_backbone_is_refused(lab_folder, tmp_path):
    from cafe_core.io.checkpoints import CheckpointError

    other = tmp_path / "other"
    shutil.copytree(lab_folder, other)
    save_checkpoint(other / "adv.safetensors", {"model": make_lite(9)}, dict(CARD, stage="adv", parent=None))
    with pytest.raises(CheckpointError, match="another ADV backbone"):
        Lab(other)


def test_worker_processes_answer_like_the_library_and_survive_a_killed_worker(lab_folder, fashion):
    import os
    import signal

    from cafe_core.serving.workers import AnalysisPool, WorkerStopped

    image, label = fashion[2][0]
    settings = dict(attack="pgd", eps=0.1, steps=3, seed=1, feature_steps=3, eps_inv=0.05)
    expected, expected_rows = Lab(lab_folder).comparison(image[None], int(label), **settings)
    pool = AnalysisPool(workers=1, cache_entries=0)  # every request reaches a worker
    try:
        result, rows = pool.comparison(lab_folder, image[None], int(label), **settings)
        assert rows == expected_rows
        # Same labels; floats equal up to the last bits (another process, another BLAS state).
        assert compare_numbers(build_report(expected, expected_rows), build_report(result, rows), 1e-5) == []
        assert all(np.abs(result.images[k].astype(int) - expected.images[k]).max() <= 1 for k in expected.images)
        with pytest.raises(ValueError, match="target class"):  # errors come back as they are
            pool.comparison(lab_folder, image[None], int(label), **{**settings, "target": 99})
        for pid in list(pool._executor._processes):  # a worker killed, e.g. by the OOM killer
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerStopped, match="try again"):
            pool.comparison(lab_folder, image[None], int(label), **settings)
        again, again_rows = pool.comparison(lab_folder, image[None], int(label), **settings)
        assert compare_numbers(build_report(expected, expected_rows), build_report(again, again_rows), 1e-5) == []
    finally:
        pool.close()
