"""Robust-accuracy evaluation: plain numbers, resumable per batch, exact on trivial models."""
from __future__ import annotations

import json

import torch
from torch import nn

from cafe_core.evaluation.evaluate import compute_label, evaluate_attacks, normalise_state_keys


class Oracle(nn.Module):
    """Predicts the label encoded in pixel (0, 0): always right, whatever an attack does to it."""

    num_classes = 10

    def __init__(self, labels_by_pixel: dict[int, int]) -> None:
        super().__init__()
        self.table = labels_by_pixel
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        keys = (x[:, 0, 0, 0] * 255).round().long().tolist()
        out = torch.zeros(len(keys), 10) + self.dummy * x.flatten(1).sum(1, keepdim=True)
        for i, k in enumerate(keys):
            out[i, self.table.get(k, 0)] = 1.0
        return out


def test_state_file_is_reused_and_a_different_limit_recomputes(toy_model, fashion, tmp_path):
    data = fashion[2].subset(torch.arange(40))
    state = tmp_path / "state.json"
    first = evaluate_attacks(toy_model, data, ["clean", "fgsm"], 0.1, batch_size=20, state_path=state, progress=False)
    saved = json.loads(state.read_text())
    key = next(k for k in saved if json.loads(k)[0] == "fgsm")
    saved[key]["batches"]["0"] = [0] * 20  # pretend batch 0 was all wrong
    state.write_text(json.dumps(saved))
    again = evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=20, state_path=state, progress=False)
    assert again["correct"]["fgsm"][:20] == [0] * 20, "a finished batch is read back, not recomputed"
    assert again["correct"]["fgsm"][20:] == first["correct"]["fgsm"][20:]
    shorter = evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=20, state_path=state,
                               limits={"fgsm": 30}, progress=False)
    assert shorter["n_images"]["fgsm"] == 30
    assert shorter["correct"]["fgsm"][20:] == first["correct"]["fgsm"][20:30]


def test_a_model_that_is_always_right_scores_one_and_a_random_one_about_a_tenth(fashion):
    data = fashion[2].subset(torch.arange(200))
    # Make pixel (0,0) a unique key per image so the oracle can look the label up.
    images = data.images.clone()
    images[:, 0, 0, 0] = torch.arange(200, dtype=torch.uint8)
    from cafe_core.data.datasets import ImageTensors

    keyed = ImageTensors(images, data.labels, data.class_names)
    oracle = Oracle({i: int(data.labels[i]) for i in range(200)})
    result = evaluate_attacks(oracle, keyed, ["clean"], 0.1, progress=False)
    assert result["accuracy"]["clean"] == 1.0
    torch.manual_seed(0)
    random_labels = Oracle({i: int(torch.randint(0, 10, ())) for i in range(200)})
    chance = evaluate_attacks(random_labels, keyed, ["clean"], 0.1, progress=False)["accuracy"]["clean"]
    assert 0.03 < chance < 0.2


def test_a_batch_larger_than_the_images_is_keyed_as_that_single_batch(toy_model, fashion, tmp_path):
    """n <= batch size is one batch whatever the batch size: results stored at one batch size are
    read back at another (the GPU run's batch 2,000 and the CPU's 500 share the 500-image curves)."""
    data = fashion[2].subset(torch.arange(40))
    state = tmp_path / "state.json"
    evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=20, limits={"fgsm": 15}, state_path=state,
                     progress=False)
    saved = json.loads(state.read_text())
    (key,) = [k for k in saved]
    assert json.loads(key)[4] == 15
    saved[key]["batches"]["0"] = [1] * 15  # poison: a read-back shows it
    state.write_text(json.dumps(saved))
    bigger = evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=2000, limits={"fgsm": 15},
                              state_path=state, progress=False)
    assert bigger["correct"]["fgsm"] == [1] * 15
    assert bigger["computed_on"]["fgsm"] == [compute_label("cpu")]


def test_state_written_with_the_old_keys_is_read_back(toy_model, fashion, tmp_path):
    data = fashion[2].subset(torch.arange(40))
    state = tmp_path / "state.json"
    old_key = json.dumps(["fgsm", 0.1, 0, None, 500])  # before keys used min(batch size, n)
    partial_key = json.dumps(["pgd", 0.1, 0, 3, 20])  # a full first batch of a longer run: unchanged
    state.write_text(json.dumps({old_key: {"batches": {"0": [1] * 12}, "seconds": 1.0},
                                 partial_key: {"batches": {"0": [1] * 20}, "seconds": 1.0}}))
    assert set(normalise_state_keys(json.loads(state.read_text()))) == {json.dumps(["fgsm", 0.1, 0, None, 12]),
                                                                          partial_key}
    result = evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=500, limits={"fgsm": 12},
                              state_path=state, progress=False)
    assert result["correct"]["fgsm"] == [1] * 12, "the stored batch is reused, not recomputed"
    assert result["computed_on"]["fgsm"] == [], "no batch was computed by this run"


def test_images_attacked_at_another_batch_size_are_read_back_not_recomputed(toy_model, fashion, tmp_path):
    """The AutoAttack eps curve's first 100 images at the grid's eps are the first 100 of the
    grid's AutoAttack run (batches of 500): copied, with their provenance, not attacked again."""
    data = fashion[2].subset(torch.arange(40))
    state = tmp_path / "state.json"
    evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=20, limits={"fgsm": 40}, state_path=state,
                     progress=False)
    saved = json.loads(state.read_text())
    (key,) = list(saved)
    poisoned = [1, 0] * 10
    saved[key]["batches"] = {"0": poisoned, "1": [0] * 20}  # a read-back shows these
    saved[key]["computed_on"] = ["elsewhere"]
    state.write_text(json.dumps(saved))
    curve = evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=8, limits={"fgsm": 25},
                             state_path=state, progress=False)
    assert curve["correct"]["fgsm"] == (poisoned + [0] * 20)[:25]
    assert curve["computed_on"]["fgsm"] == ["elsewhere"]
    stored = json.loads(state.read_text())[json.dumps(["fgsm", 0.1, 0, None, 8])]
    assert stored["copied_from"] == key
    other_eps = evaluate_attacks(toy_model, data, ["fgsm"], 0.05, batch_size=8, limits={"fgsm": 25},
                                 state_path=state, progress=False)
    assert other_eps["computed_on"]["fgsm"] == [compute_label("cpu")], "another eps is attacked"
    longer = evaluate_attacks(toy_model, data, ["fgsm"], 0.1, batch_size=30, state_path=state, progress=False)
    assert longer["correct"]["fgsm"] == poisoned + [0] * 20, "40 images at batch 30: both batches copied"
