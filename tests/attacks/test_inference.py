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
