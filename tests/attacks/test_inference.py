"""The compiled query model used by Square: same logits, same attack, safe fall-backs."""
from __future__ import annotations

import torch

from cafe_core.attacks.registry import QuerySquare
from cafe_core.attacks.inference import QueryModel


def test_query_model_matches_the_model_and_follows_weight_changes(toy_model, fashion):
    images = fashion[2].images[:64].float() / 255
    queries = QueryModel(toy_model, enabled=True)
    with torch.no_grad():
        eager = toy_model(images)
    assert torch.allclose(queries(images), eager, atol=1e-4)
    assert queries.status == "compiled", queries.reason
    assert torch.allclose(queries(images[:7]), eager[:7], atol=1e-4), "other batch sizes"
    # Weights updated in place (as an optimizer step does): the frozen copy must not be reused.
    model = toy_model
    saved = model.classifier.fc.bias.detach().clone()
    try:
        with torch.no_grad():
            model.classifier.fc.bias.add_(3.0)
            changed = model(images)
        assert torch.allclose(queries(images), changed, atol=1e-4)
    finally:
        with torch.no_grad():
            model.classifier.fc.bias.copy_(saved)
    assert torch.allclose(queries(images), eager, atol=1e-4)


def test_query_model_falls_back_to_eager(toy_model, fashion, monkeypatch):
    images = fashion[2].images[:16].float() / 255
    with torch.no_grad():
        eager = toy_model(images)
    wrong = QueryModel(toy_model, enabled=True)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: (lambda x: module(x) + 1.0))
    assert torch.equal(wrong(images), eager)
    assert wrong.status == "eager" and "differ" in wrong.reason
    assert torch.equal(wrong(images), eager)

    def broken(module, **kw):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", broken)
    failing = QueryModel(toy_model, enabled=True)
    assert torch.equal(failing(images), eager)
    assert failing.status == "eager" and "no C++ compiler" in failing.reason
    assert QueryModel(toy_model, enabled=False).status == "eager"


def test_square_through_the_compiled_copy_finds_the_same_adversarials(toy_model, fashion):
    images, labels = fashion[2][list(range(24))]
    runs = {}
    for fast in (True, False):
        square = QuerySquare(toy_model, fast_queries=fast, norm="Linf", eps=0.05, n_queries=60, seed=3)
        runs[fast] = square(images, labels)
        assert square.queries.status == ("compiled" if fast else "eager"), square.queries.reason
    assert torch.allclose(runs[True], runs[False], atol=1e-6)
    assert not torch.equal(runs[True], images)


def test_compiling_waits_for_a_budget_that_repays_it(toy_model, fashion, monkeypatch):
    """Square's few-query runs (the app, the masking check, tests) stay eager; AutoAttack's 5,000
    queries on a batch are compiled. ``fast_queries=True`` compiles whatever the budget."""
    from cafe_core.attacks.inference import COMPILE_MIN_IMAGES

    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # the decision, not inductor's work
    monkeypatch.setenv("CAFE_FAST_QUERIES", "1")  # tests/conftest.py turns it off for the tests
    images, labels = fashion[2][list(range(8))]
    few = QuerySquare(toy_model, norm="Linf", eps=0.05, n_queries=10, seed=0)
    few(images, labels)
    assert few.queries.status == "eager" and "too few" in few.queries.reason
    assert 10 * 8 < COMPILE_MIN_IMAGES <= 5000 * 16
    many = QueryModel(toy_model, budget=5000)
    many(fashion[2].images[:16].float() / 255)
    assert many.status == "compiled", many.reason
    forced = QuerySquare(toy_model, fast_queries=True, norm="Linf", eps=0.05, n_queries=10, seed=0)
    forced(images, labels)
    assert forced.queries.status == "compiled", forced.queries.reason
