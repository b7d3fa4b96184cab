"""The app through its API (gradio_client against a locally launched server)."""
from __future__ import annotations

import pytest
import torch

from cafe_core.checkpoints import CheckpointError, save_checkpoint
from cafe_core.images import prepare_image
from cafe_core.predict import classify, load_stage

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def checkpoint_set(toy_model, tmp_path_factory):
    from cafe_core.models.estimator import create_estimator
    from cafe_core.stages import parent_record

    folder = tmp_path_factory.mktemp("set")
    adv = folder / "adv.safetensors"
    card = save_checkpoint(adv, {"model": toy_model},
                           {"dataset": "fashion-mnist", "backbone": "lite", "stage": "adv", "parent": None,
                            "eps": 0.1, "config": {}, "metrics": {"val_clean_acc": 0.6, "val_robust_acc": 0.1}})
    torch.manual_seed(0)
    save_checkpoint(folder / "amr.safetensors", {"h": create_estimator(128), "g": create_estimator(128)},
                    {"dataset": "fashion-mnist", "backbone": "lite", "stage": "amr", "eps": 0.1,
                     "config_name": "fashion_lite", "config": {}, "parent": parent_record(adv, card)})
    return folder


@pytest.fixture(scope="module")
def client(checkpoint_set):
    import app

    demo = app.build_app(checkpoint_set)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def test_classify_endpoint_matches_the_library(client, checkpoint_set):
    import app

    example = app.EXAMPLES[0]
    label, seen, notes = client.predict(gradio_client.handle_file(example), api_name="/classify")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    loaded = load_stage(checkpoint_set)
    expected = classify(loaded, prepare_image(example, 1, 28).tensor)
    assert label["label"] == expected.name
    assert sum(expected.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    top = max(confidences, key=confidences.get)
    assert top == expected.name and confidences[top] == pytest.approx(expected.confidence, abs=1e-4)
    assert "What the model sees" in notes


def test_explore_endpoint_returns_every_panel(client):
    import app

    example = app.EXAMPLES[3]  # a dress: true label known from the gallery file name
    gallery, probs, channels, summary, numbers = client.predict(
        gradio_client.handle_file(example), "pgd", 25, 5, 0, "none", api_name="/explore")
    assert len(gallery) == len(app.PANELS)
    captions = [item["caption"] for item in gallery]
    assert captions[0].startswith("Clean: ") and "Causal inversion" in captions[3]
    assert any(c.endswith(("✓", "✗")) for c in captions)
    assert numbers["settings"]["eps"] == pytest.approx(25 / 255) and numbers["settings"]["true_label"] == 3
    assert numbers["linf"] <= 25 / 255 + 1e-6
    for view in numbers["predictions"].values():
        assert sum(view["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert "KL to the causal prediction" in summary
    assert probs is not None and channels is not None


@pytest.mark.parametrize("args,message", [
    (("pgd", 300, 5, 0, "none"), "eps"),
    (("pgd", "nan", 5, 0, "none"), "eps"),
    (("pgd", 8, 10_000, 0, "none"), "steps"),
    (("deepfool", 8, 5, 0, "none"), "Unknown attack"),
    (("pgd", 8, 5, 0, "Spaceship"), "Unknown target"),
])
def test_explore_refuses_out_of_range_settings(client, args, message):
    import app

    with pytest.raises(Exception, match=message):
        client.predict(gradio_client.handle_file(app.EXAMPLES[0]), *args, api_name="/explore")


def test_non_image_upload_gives_a_clear_error_and_the_app_keeps_serving(client, tmp_path):
    bogus = tmp_path / "not_an_image.png"
    bogus.write_text("hello, I am text")
    with pytest.raises(Exception, match="(?i)not an image|could not decode|invalid image"):
        client.predict(gradio_client.handle_file(str(bogus)), api_name="/classify")
    import app

    label, _, _ = client.predict(gradio_client.handle_file(app.EXAMPLES[1]), api_name="/classify")
    assert label["label"]


def test_paths_outside_the_upload_cache_are_refused(client, tmp_path):
    import gradio as gr
    import httpx

    import app

    with pytest.raises(gr.Error, match="not an upload of this session"):
        app.upload_path({"path": "/etc/passwd"}, tmp_path)
    with pytest.raises(gr.Error, match="not an upload of this session"):
        app.upload_path({"path": str(tmp_path / ".." / ".." / "etc" / "passwd")}, tmp_path)
    assert app.upload_path({"path": app.EXAMPLES[0]}, tmp_path) == app.EXAMPLES[0]
    # Raw HTTP, as a hostile API caller would send it (gradio_client would upload the file instead).
    base = client.src.rstrip("/")
    payload = {"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]}
    start = httpx.post(f"{base}/gradio_api/call/classify", json=payload, timeout=30)
    if start.status_code == 200:
        stream = httpx.get(f"{base}/gradio_api/call/classify/{start.json()['event_id']}", timeout=30).text
        assert "event: error" in stream
    else:
        assert start.status_code in (400, 403, 422)
        stream = start.text
    assert "root:" not in stream


def test_missing_or_broken_checkpoint_set_is_refused(tmp_path, checkpoint_set):
    import app

    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        app.build_app(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        app.build_app(tmp_path)
    (tmp_path / "adv.safetensors").write_bytes((checkpoint_set / "adv.safetensors").read_bytes()[:500])
    (tmp_path / "adv.json").write_bytes((checkpoint_set / "adv.json").read_bytes())
    with pytest.raises(CheckpointError, match="sha256"):
        app.build_app(tmp_path)
