"""The app's handlers called directly (no server), on the shipped checkpoint set."""
from __future__ import annotations

import pytest

from cafe_core.serving import handlers as h
from cafe_core.serving.lab import Lab
from cafe_core.data.images import prepare_image
from cafe_core.serving.settings import UserError, explore_defaults
from cafe_core.serving.texts import PANELS


@pytest.fixture(scope="module")
def ctx():
    context = h.AppContext.create(workers=0)
    yield context
    context.pool.close()


def test_first_screen_is_a_worked_example_of_the_phenomenon(ctx):
    view = h.example_view(ctx, 0)
    assert "The attack worked" in view.headline
    captions = [caption for _, caption in view.gallery]
    assert len(captions) == len(PANELS)
    assert next(c for c in captions if c.startswith("Adversarial:")).endswith("✗")
    assert next(c for c in captions if c.startswith("Causal feature:")).endswith("✓")
    assert view.table["data"][0][0] == "no defense (undefended network)"
    assert view.table["data"][0][2].endswith("✗"), "the undefended network is fooled on the first example"
    assert [r[0] for r in view.table["data"]][1:4] == ["ADV", "ADV + CAFE", "ADV + CAFE with h = 0 (control)"]


def test_cached_answers_are_identical_to_fresh_ones(ctx):
    example = ctx.examples[2]
    first = h.run_explore(ctx, None, str(example), "adv", "pgd", 26, 10, 0, "none")
    hits = ctx.pool.cache.hits
    again = h.run_explore(ctx, None, str(example), "adv", "pgd", 26, 10, 0, "none")
    assert ctx.pool.cache.hits == hits + 1
    fresh, rows = Lab(ctx.default).comparison(prepare_image(example, 1, 28).tensor, ctx.example_label(example),
                                              network="adv", **explore_defaults(0.1))
    assert again.numbers == first.numbers
    assert {k: v for k, v in again.numbers.items() if k != "ood"} == fresh.to_json()
    assert again.last["rows"] == rows
    other = h.run_explore(ctx, None, str(example), "adv", "pgd", 20, 10, 0, "none")
    assert other.numbers["settings"]["eps"] != first.numbers["settings"]["eps"], "other settings, other entry"


def test_the_undefended_network_has_its_own_causal_panels(ctx):
    view = h.run_explore(ctx, None, str(ctx.examples[3]), "standard", "pgd", 26, 10, 0, "none")
    assert view.numbers["settings"]["network"] == "standard"
    assert "undefended network now says" in view.headline
    assert view.numbers["settings"]["amr_sha256"] == ctx.first.bundles["standard"].card["sha256"]


def test_bad_requests_get_messages(ctx, tmp_path):
    with pytest.raises(UserError, match="Unknown network"):
        h.run_explore(ctx, None, str(ctx.examples[0]), "resnet", "pgd", 26, 10, 0, "none")
    with pytest.raises(UserError, match="Train h and g"):
        h.run_explore(ctx, None, str(ctx.examples[0]), "adv", "pgd", 26, 10, 0, "none", True, None)
    with pytest.raises(UserError, match="eps"):
        h.run_explore(ctx, None, str(ctx.examples[0]), "adv", "pgd", 300, 10, 0, "none")
    with pytest.raises(UserError, match="Run an attack first"):
        h.make_report(None)
    with pytest.raises(UserError, match="Unknown lesson step"):
        h.show_lesson(ctx, "6. More", None)


def test_lesson_uses_an_example_that_shows_the_phenomenon(ctx):
    text, gallery = h.show_lesson(ctx, "3. The causal feature", None)
    assert "kept the true class although the attack changed the prediction" in text
    text, _ = h.show_lesson(ctx, "5. Inoculated defenses", None)
    assert "holds for 0 of 5 defenses" in text and "h = 0 control" in text


def test_robustness_tab_states_the_claim_and_the_control(ctx):
    table, curves, text = h.show_robustness(ctx, None)
    assert len(table["data"]) == 11 and "holds for" in text and "h = 0 control" in text
