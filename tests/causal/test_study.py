"""The causal analysis as a results file: the same numbers as causal_analysis, the sweep, the figure."""
from __future__ import annotations

import json

import torch

from cafe_core.causal.analysis import causal_analysis, load_amr
from cafe_core.causal.study import StudySettings, figure_path, write_figure_only, write_study


def test_the_study_writes_the_analysis_numbers_with_its_sweep_and_provenance(amr_files, fashion, tmp_path):
    _, amr = amr_files
    settings = StudySettings(steps=2, eps_inv=0.05, n=24, sweep_eps_inv=(0.02,), sweep_n=8, figure_n=0,
                             batch_size=12)
    result, out = write_study(amr, settings, out=tmp_path / "causal_toy.json", progress=False, command="python x")
    assert out == tmp_path / "causal_toy.json" and json.loads(out.read_text()) == result
    direct = causal_analysis(load_amr(amr), fashion[2].subset(torch.arange(24)), steps=2, eps_inv=0.05, batch_size=12,
                             progress=False)
    assert result["accuracy"] == direct["accuracy"] and result["kl_x1000"] == direct["kl_x1000"]
    assert [s["eps_inv"] for s in result["eps_inv_sweep"]] == [0.02] and result["eps_inv_sweep"][0]["n_images"] == 8
    assert result["command"] == "python x" and result["n_images"] == 24 and "figure" not in result
    assert out.with_suffix(".md").read_text().startswith("Causal analysis: fashion-mnist lite, pgd-2")


def test_figure_only_draws_beside_the_results_and_records_how(amr_files, tmp_path):
    _, amr = amr_files
    out = tmp_path / "causal_toy.json"
    out.write_text(json.dumps({"accuracy": {"natural": 0.5}}))
    settings = StudySettings(steps=2, n=60, figure_n=2, figure_select="first")
    figure = write_figure_only(amr, settings, out=out, command="python -m cafe_core analyze --figure-only")
    assert figure == figure_path(out) and figure.stat().st_size > 1000
    saved = json.loads(out.read_text())
    assert saved["accuracy"] == {"natural": 0.5}  # the numbers are kept
    assert saved["figure_command"] == "python -m cafe_core analyze --figure-only" and saved["figure"] == str(figure)
