"""Checkpoints: round trip, clear errors on corrupt/mismatched files, never unpickle."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from cafe_core.io.checkpoints import CheckpointError, load_backbone, load_checkpoint, save_checkpoint
from cafe_core.io.serialization import atomic_write_text, load_state, save_state
from tests.conftest import make_lite

CARD = {"dataset": "fashion-mnist", "backbone": "lite", "stage": "adv", "parent": None,
        "config": {"eps": 0.1}, "eps": 0.1, "metrics": {"val_clean_acc": 0.5}, "seed": 0}


@pytest.fixture()
def saved(tmp_path):
    model = make_lite(seed=3).eval()
    path = tmp_path / "adv.safetensors"
    card = save_checkpoint(path, {"model": model}, CARD)
    return model, path, card


def test_round_trip_gives_the_same_model(saved):
    model, path, card = saved
    loaded, loaded_card = load_backbone(path, backbone="lite")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded_card["sha256"] == card["sha256"] and len(card["sha256"]) == 64
    for field in ("dataset", "backbone", "stage", "parent", "config", "metrics", "seed", "versions"):
        assert field in loaded_card
    assert loaded_card["versions"]["torch"] == torch.__version__
    assert not loaded.training


def test_fp16_storage_halves_the_file_and_keeps_predictions(tmp_path, saved):
    model, path, _ = saved
    half = tmp_path / "half.safetensors"
    save_checkpoint(half, {"model": model}, CARD, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded, card = load_backbone(half)
    assert card["storage_dtype"] == "float16"
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x).argmax(1), model(x).argmax(1))


def test_changed_weights_fail_the_sha256_check(saved):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* does not match its card"):
        load_backbone(path)


def test_truncated_weights_with_a_matching_card_are_reported_corrupt(saved):
    _, path, _ = saved
    path.write_bytes(path.read_bytes()[:1000])
    card = json.loads(path.with_suffix(".json").read_text())
    import hashlib

    card["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_backbone(path)


def test_missing_card_and_missing_file(saved, tmp_path):
    _, path, _ = saved
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_backbone(tmp_path / "nope.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="card adv.json is missing"):
        load_backbone(path)


def test_requested_backbone_must_match_the_card(saved):
    _, path, _ = saved
    with pytest.raises(CheckpointError, match="card says backbone='lite' but 'resnet18' was requested"):
        load_backbone(path, backbone="resnet18")
    with pytest.raises(CheckpointError, match="stage='adv' but 'standard'"):
        load_checkpoint(path, {"stage": "standard"})


def test_card_naming_another_backbone_than_the_weights(saved):
    _, path, _ = saved
    card_file = path.with_suffix(".json")
    card = json.loads(card_file.read_text())
    card["backbone"] = "resnet18"
    card_file.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="backbone 'resnet18' does not fit the weights: .*shape mismatch"):
        load_backbone(path)


def test_pickle_files_are_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Payload()))
    bad.with_suffix(".json").write_text(json.dumps(dict(CARD, sha256=__import__("hashlib").sha256(bad.read_bytes()).hexdigest(), modules=["model"])))
    with pytest.raises(CheckpointError, match="pickle"):
        load_backbone(bad)
    assert not marker.exists()
    torch_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, torch_file)
    from cafe_core.io.serialization import check_safetensors_file

    with pytest.raises(ValueError, match="only .safetensors weights"):
        check_safetensors_file(torch_file)


def test_nested_training_state_round_trips_without_pickle(tmp_path):
    model = make_lite()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "history": [{"epoch": 1, "acc": 0.5}],
             "best": float("-inf"), "pair": (1, "a")}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["history"] == state["history"] and back["pair"] == (1, "a") and back["best"] == float("-inf")
    assert torch.equal(back["rng"], state["rng"])
    assert set(back["optimizer"]["state"]) == set(state["optimizer"]["state"])  # int keys survive
    fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(back["optimizer"])
    key = next(iter(state["optimizer"]["state"]))
    assert torch.equal(fresh.state_dict()["state"][key]["momentum_buffer"],
                       state["optimizer"]["state"][key]["momentum_buffer"])


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "card.json"
    atomic_write_text(target, "old")

    def boom(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    from cafe_core.io.serialization import atomic_write

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
