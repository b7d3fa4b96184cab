"""Robust-accuracy evaluation: plain numbers, resumable per batch, exact on trivial models."""
from __future__ import annotations

import json

import torch
from torch import nn

from cafe_core.evaluate import evaluate_attacks


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
    from cafe_core.data import ImageTensors

    keyed = ImageTensors(images, data.labels, data.class_names)
    oracle = Oracle({i: int(data.labels[i]) for i in range(200)})
    result = evaluate_attacks(oracle, keyed, ["clean"], 0.1, progress=False)
    assert result["accuracy"]["clean"] == 1.0
    torch.manual_seed(0)
    random_labels = Oracle({i: int(torch.randint(0, 10, ())) for i in range(200)})
    chance = evaluate_attacks(random_labels, keyed, ["clean"], 0.1, progress=False)["accuracy"]["clean"]
    assert 0.03 < chance < 0.2
