"""The out-of-distribution detector: fitting, its threshold, storage beside the backbone, and the
shipped detector on a rendered digit and on real test images."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from cafe_core.io.checkpoints import CheckpointError, save_checkpoint
from cafe_core.data.images import prepare_image
from cafe_core.evaluation.ood import OOD_FILE, fit_ood, load_ood, save_ood
from cafe_core.io.checkpoints import parent_record

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "fashion_lite"
CARD = {"dataset": "fashion-mnist", "backbone": "lite", "eps": 0.1, "config": {}, "seed": 0}


@pytest.fixture(scope="module")
def small(fashion, toy_model):
    """A detector fitted with the toy backbone on 1,024 training and 512 validation images."""
    train, val, _ = fashion
    return fit_ood(toy_model, train.images[:1024], train.labels[:1024], val.images)


def _folder_with(tmp_path: Path, model, detector) -> Path:
    """A checkpoint set holding ``model`` as adv.safetensors and ``detector`` as ood.safetensors."""
    adv = tmp_path / "adv.safetensors"
    adv_card = save_checkpoint(adv, {"model": model}, dict(CARD, stage="adv", parent=None))
    save_ood(detector, tmp_path / OOD_FILE, dict(CARD, parent=parent_record(adv, adv_card)))
    return tmp_path


def test_fit_is_deterministic(fashion, toy_model, small):
    train, val, _ = fashion
    again = fit_ood(toy_model, train.images[:1024], train.labels[:1024], val.images)
    for name in ("means", "precision", "class_precisions", "class_logdets", "scales"):
        assert torch.equal(getattr(small, name), getattr(again, name)), name
    assert again.threshold == small.threshold
    assert small.means.shape == (10, 128) and small.precision.shape == (128, 128)
    assert torch.equal(small.score(val.images[:50].float() / 255), again.score(val.images[:50].float() / 255))


@pytest.mark.parametrize("pass_rate", [0.95, 0.8])
def test_threshold_passes_the_requested_share_of_its_calibration_images(fashion, toy_model, small, pass_rate):
    train, val, _ = fashion
    detector = small if pass_rate == 0.95 else fit_ood(toy_model, train.images[:1024], train.labels[:1024],
                                                       val.images, pass_rate)
    scores = detector.score(val.images.float() / 255)
    passed = int((scores <= detector.threshold).sum())
    assert passed == math.ceil(pass_rate * len(val))  # 487 of 512 for 95%: no ties among float64 scores


def test_save_load_roundtrip(tmp_path, fashion, toy_model, small):
    _, _, test = fashion
    folder = _folder_with(tmp_path, toy_model, small)
    loaded = load_ood(folder)
    for name in ("means", "precision", "class_precisions", "class_logdets", "scales"):
        assert torch.equal(getattr(loaded, name), getattr(small, name)), name
    assert loaded.threshold == small.threshold and loaded.card["stage"] == "ood"
    images = test.images[:20].float() / 255
    assert torch.equal(loaded.score(images), small.score(images))
    check = loaded.check(images[0])
    assert set(check) == {"score", "threshold", "flagged"}
    assert type(check["score"]) is float and type(check["flagged"]) is bool
    assert check["flagged"] == (check["score"] > check["threshold"]) and check == loaded.check(images[:1])
    reused = load_ood(folder, backbone=toy_model)  # the app passes the backbone it already holds
    assert reused.backbone is toy_model and torch.equal(reused.score(images), small.score(images))


def test_no_detector_in_the_folder_is_none(tmp_path):
    assert load_ood(tmp_path) is None


def test_another_backbone_is_refused(tmp_path, toy_model, small):
    folder = _folder_with(tmp_path, toy_model, small)
    other = type(toy_model)((32, 64, 128), (1, 1, 1), in_channels=1, num_classes=10)
    save_checkpoint(folder / "adv.safetensors", {"model": other}, dict(CARD, stage="adv", parent=None))
    with pytest.raises(CheckpointError, match="fitted on another adv.safetensors"):
        load_ood(folder)


def test_a_changed_detector_file_is_refused(tmp_path, toy_model, small):
    folder = _folder_with(tmp_path, toy_model, small)
    data = bytearray((folder / OOD_FILE).read_bytes())
    data[-1] ^= 1
    (folder / OOD_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_ood(folder)


def test_fit_refuses_a_class_without_images(fashion, toy_model):
    train, val, _ = fashion
    keep = train.labels[:256] != 3
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        fit_ood(toy_model, train.images[:256][keep], train.labels[:256][keep], val.images[:64])


# ------------------------------------------------------------------- the shipped detector
@pytest.fixture(scope="module")
def shipped():
    detector = load_ood(SHIPPED)
    assert detector is not None, "checkpoints/fashion_lite/ood.safetensors is missing"
    return detector


def _digit(text: str) -> Image.Image:
    """A white digit on black, as a 112x112 upload, in Pillow's built-in font (no system font needed)."""
    img = Image.new("L", (112, 112), 0)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=90)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((56 - (left + right) / 2, 56 - (top + bottom) / 2), text, fill=255, font=font, stroke_width=4,
              stroke_fill=255)
    return img


@pytest.mark.parametrize("digit", ["2", "4", "5"])
def test_shipped_detector_flags_a_rendered_digit(shipped, digit):
    prepared = prepare_image(_digit(digit), 1, 28, fashion_mnist=True)  # the app's path for an upload
    check = shipped.check(prepared.tensor)
    assert check["flagged"], check


def test_shipped_detector_on_test_images(shipped, fashion):
    _, _, test = fashion
    scores = shipped.score(test.images.float() / 255)
    assert float((scores > shipped.threshold).double().mean()) <= 0.08  # 512 images; 10,000 in benchmarks/ood.py
    assert not shipped.check(test.images[0].float() / 255)["flagged"]
    negated = shipped.score(1 - test.images[:100].float() / 255)
    assert float((negated > shipped.threshold).double().mean()) >= 0.9


def test_shipped_card_names_the_shipped_backbone(shipped):
    card = shipped.card
    adv = SHIPPED / "adv.safetensors"
    from cafe_core.io.serialization import sha256_file

    assert card["parent"]["sha256"] == sha256_file(adv) and card["stage"] == "ood"
    assert card["n_train_images"] == 55000 and card["n_val_images"] == 5000
    assert card["metrics"]["val_pass_rate"] == pytest.approx(0.95, abs=1e-9)
    assert shipped.threshold == card["threshold"]


def test_cli_fits_a_detector(tmp_path, toy_model):
    from cafe_core.cli import main

    adv = tmp_path / "adv.safetensors"
    save_checkpoint(adv, {"model": toy_model}, dict(CARD, stage="adv", parent=None))
    assert main(["ood", "--parent", str(adv), "--out", str(tmp_path / OOD_FILE), "--limit", "600", "--quiet"]) == 0
    detector = load_ood(tmp_path)
    assert detector.card["n_train_images"] == 600 and detector.card["n_val_images"] == 600
    assert detector.card["metrics"]["val_pass_rate"] == 570 / 600
