"""The gallery's manifest is true: the app's own analysis, rerun on every example, gives the
outcomes the manifest records (so a retrained checkpoint cannot silently break the gallery)."""
from __future__ import annotations

import pytest

from cafe_core.serving.gallery import CONDITIONS, example_file_name, read_manifest
from cafe_core.serving.handlers import EXAMPLE_DIR, AppContext, run_explore
from cafe_core.serving.settings import default_eps_255

MANIFEST = read_manifest(EXAMPLE_DIR)
KEYS = ("natural", "adversarial", "causal", "counterfactual")


@pytest.fixture(scope="module")
def ctx():
    context = AppContext.create(workers=0)
    yield context
    context.pool.close()


def test_manifest_fields_and_the_phenomenon_it_promises():
    assert MANIFEST is not None, "run python -m cafe_core.serving.gallery"
    assert {"rule", "settings", "backbone_sha256", "examples"} <= set(MANIFEST)
    examples = MANIFEST["examples"]
    assert len(examples) == 10 and sorted(e["label"] for e in examples) == list(range(10))
    for e in examples:
        assert {"file", "label", "test_index", "predictions", "adversarial_correct", "causal_correct",
                "counterfactual_correct"} <= set(e)
        assert set(e["predictions"]) == set(KEYS)
        assert e["file"] == example_file_name(e["label"], e["class_name"], e["test_index"])
        assert (EXAMPLE_DIR / e["file"]).is_file()
        assert e["adversarial_correct"] == (e["predictions"]["adversarial"] == e["label"])
        assert set(e["rule_met"]) <= set(CONDITIONS)
        assert e["ood_flagged"] is False, "the first screen never opens with an out-of-distribution warning"
    assert sum(not e["adversarial_correct"] for e in examples) >= 8, "the attack fools the robust network"
    assert sum(e["standard_adversarial_correct"] is False for e in examples) >= 9, "and the undefended one"
    assert sorted(p.name for p in EXAMPLE_DIR.glob("*.png")) == sorted(e["file"] for e in examples)


def test_manifest_is_for_the_shipped_checkpoints(ctx):
    assert MANIFEST["backbone_sha256"] == ctx.first.adv.card["sha256"], "retrained: rerun python -m cafe_core.serving.gallery"
    assert MANIFEST["amr_sha256"] == ctx.first.bundle.card["sha256"]
    assert MANIFEST["settings"]["eps"] == pytest.approx(default_eps_255(ctx.first.adv.card["eps"]) / 255)


@pytest.mark.parametrize("index", range(10))
def test_the_app_analysis_gives_the_recorded_outcome(ctx, index):
    entry = MANIFEST["examples"][index]
    s = MANIFEST["settings"]
    args = ("pgd", round(255 * s["eps"]), s["steps"], s["seed"], "none")
    view = run_explore(ctx, None, str(EXAMPLE_DIR / entry["file"]), "adv", *args)
    predictions = view.numbers["predictions"]
    assert view.numbers["settings"]["true_label"] == entry["label"]
    assert {k: predictions[k]["label"] for k in KEYS} == entry["predictions"]
    for key in ("adversarial", "causal", "counterfactual"):
        assert predictions[key]["correct"] == entry[f"{key}_correct"]
    assert view.numbers["ood"]["flagged"] is False
    undefended = run_explore(ctx, None, str(EXAMPLE_DIR / entry["file"]), "standard", *args)
    assert undefended.numbers["predictions"]["adversarial"]["correct"] == entry["standard_adversarial_correct"]
