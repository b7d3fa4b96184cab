"""The app through its API (gradio_client against a locally launched server)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cafe_core.io.checkpoints import CheckpointError, save_checkpoint
from cafe_core.serving.handlers import EXAMPLE_DIR, TRAIN_ROOT
from cafe_core.data.images import prepare_image
from cafe_core.serving.predict import classify, load_stage
from cafe_core.serving.texts import PANELS

gradio_client = pytest.importorskip("gradio_client")
EXAMPLES = [str(p) for p in sorted(EXAMPLE_DIR.glob("*.png"))]


@pytest.fixture(scope="module")
def checkpoint_set(toy_model, fashion, tmp_path_factory):
    from cafe_core.models.estimator import create_estimator
    from cafe_core.io.checkpoints import parent_record

    from cafe_core.evaluation.grid import evaluate_grid

    from tests.conftest import make_lite

    folder = tmp_path_factory.mktemp("set") / "toy_set"
    adv = folder / "adv.safetensors"
    card = save_checkpoint(adv, {"model": toy_model},
                           {"dataset": "fashion-mnist", "backbone": "lite", "stage": "adv", "parent": None,
                            "eps": 0.1, "config_name": "fashion_lite", "config": {"n_val": 5000, "seed": 0},
                            "metrics": {"val_clean_acc": 0.6, "val_robust_acc": 0.1}})
    torch.manual_seed(0)
    save_checkpoint(folder / "amr.safetensors", {"h": create_estimator(128), "g": create_estimator(128)},
                    {"dataset": "fashion-mnist", "backbone": "lite", "stage": "amr", "eps": 0.1,
                     "config_name": "fashion_lite", "config": {}, "parent": parent_record(adv, card)})
    # Two "defenses" (the toy model and an untrained one) so the comparison table has rows.
    for label, net in (("defense_adv", toy_model), ("defense_adv-cafe", make_lite(3))):
        save_checkpoint(folder / f"{label}.safetensors", {"model": net},
                        {"dataset": "fashion-mnist", "backbone": "lite", "stage": "defense", "eps": 0.1,
                         "config": {}, "parent": parent_record(adv, card)})
    test = fashion[2].subset(torch.arange(20))
    evaluate_grid({"name": "toy", "dataset": "fashion-mnist", "backbone": "lite", "eps": 0.1,
                   "checkpoint_dir": str(folder)}, test, phases=("fast", "curves"), out=folder / "robustness.json",
                  steps={"pgd": 2, "square": 10}, curve_n={"pgd": 20}, curve_attacks=("pgd",), batch_size=20,
                  log=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def client(checkpoint_set):
    import app

    # No warm-up and no worker processes: these tests are about the endpoints. The start-up (first
    # example, background gallery analyses) is tested in tests/serving/test_handlers.py, the worker
    # pool in tests/serving/test_report.py and test_workers.py, and both in the browser tests.
    demo = app.build_app(checkpoint_set, warm_up=False, workers=0)
    app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False)
    finally:
        demo.close()
        demo.analysis_pool.close()


def test_classify_endpoint_matches_the_library(client, checkpoint_set):
    example = EXAMPLES[0]
    label, seen, notes, steps, ood = client.predict("toy_set", "adv", gradio_client.handle_file(example), api_name="/classify")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    loaded = load_stage(checkpoint_set)
    expected = classify(loaded, prepare_image(example, 1, 28).tensor)
    assert label["label"] == expected.name
    assert sum(expected.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    top = max(confidences, key=confidences.get)
    assert top == expected.name and confidences[top] == pytest.approx(expected.confidence, abs=1e-4)
    assert "What the model sees" in notes
    assert ood["ood"] is None or set(ood["ood"]) == {"score", "threshold", "flagged"}


def explore_args(example, eps_255=25, steps=5, seed=0, target="none", attack="pgd", network="adv"):
    return ("toy_set", gradio_client.handle_file(example), network, attack, eps_255, steps, seed, target, False)


def test_explore_endpoint_returns_every_panel_and_the_library_numbers(client, checkpoint_set):
    import numpy as np
    from PIL import Image

    from cafe_core.serving.lab import Lab

    example = EXAMPLES[3]  # a dress: true label known from the gallery file name
    gallery, headline, probs, channels, summary, table, numbers, steps = client.predict(*explore_args(example),
                                                                                        api_name="/explore")
    assert numbers["ood"] is None or set(numbers["ood"]) == {"score", "threshold", "flagged"}
    assert len(gallery) == len(PANELS)
    captions = [item["caption"] for item in gallery]
    assert captions[0].startswith("Clean: ") and "Causal inversion" in captions[3]
    assert any(c.endswith(("✓", "✗")) for c in captions)
    assert numbers["settings"]["eps"] == pytest.approx(25 / 255) and numbers["settings"]["true_label"] == 3
    clean = np.asarray(Image.open(gallery[0]["image"]), dtype=np.int16)
    adversarial = np.asarray(Image.open(gallery[1]["image"]), dtype=np.int16)
    assert 0 < np.abs(adversarial - clean).max() <= 25 + 1, "the adversarial image stays within eps"
    assert numbers["linf"] <= 25 / 255 + 1e-6
    for view in numbers["predictions"].values():
        assert sum(view["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    # Same seed, same settings, straight through the library: the same predictions.
    lab = Lab(checkpoint_set)
    result, rows = lab.comparison(prepare_image(example, 1, 28).tensor, 3, attack="pgd", eps=25 / 255, steps=5,
                                  seed=0)
    for name in ("causal", "counterfactual", "natural", "adversarial"):
        assert numbers["predictions"][name]["label"] == result.predictions[name].label
        assert numbers["predictions"][name]["probabilities"] == pytest.approx(result.predictions[name].probabilities,
                                                                              abs=1e-5)
    assert [r[0] for r in table["data"]] == ["ADV", "ADV + CAFE"]
    assert [r[2].split(" ")[0] for r in table["data"]] == [lab.class_names[r["adversarial_label"]] for r in rows]
    assert "KL to the causal prediction" in summary
    predicted = result.predictions["adversarial"]
    assert f"says **{predicted.class_name}**" in headline, "the headline names what the attacked network says"
    assert probs is not None and channels is not None
    files = client.predict(api_name="/report")  # chained after /explore, on the same session's result
    assert sorted(Path(f).suffix for f in files) == [".json", ".png"]
    report = next(f for f in files if str(f).endswith(".json"))
    from cafe_core.serving.report import read_report

    assert read_report(report)["settings"]["seed"] == 0
    attributions = client.predict("toy_set", "adv", api_name="/attributions")
    assert len(attributions) == 6 and "toward Dress" in attributions[0]["caption"]


def test_robustness_lesson_and_describe_endpoints(client):
    table, curves, text = client.predict("toy_set", api_name="/robustness")
    assert table["headers"][:3] == ["defense", "CAFE", "clean"]
    assert "holds for" in text
    assert [row[:2] for row in table["data"]] == [["adv", "baseline"], ["adv", "CAFE"]]
    assert "[" in table["data"][1][2], "the CAFE row carries its confidence interval"
    assert "Images per column" in text and curves is not None
    info, models, networks = client.predict("toy_set", api_name="/describe")
    assert "fashion-mnist" in info
    lesson, gallery = client.predict("2. The attack", "toy_set", api_name="/lesson")
    assert "changes every pixel by at most 26/255" in lesson and len(gallery) == len(PANELS)
    with pytest.raises(Exception, match="Unknown lesson step|not in the list of choices"):
        client.predict("9. Nothing", "toy_set", api_name="/lesson")
    with pytest.raises(Exception, match="Unknown checkpoint set|not in the list of choices"):
        client.predict("../../etc", api_name="/robustness")


def test_evaluate_now_matches_the_library_and_caps_its_budget(client, checkpoint_set, fashion):
    from cafe_core.evaluation.evaluate import accuracy

    text, result = client.predict("toy_set", "defense_adv", "clean", 25, 5, 30, api_name="/evaluate_now")
    from cafe_core.serving.lab import Lab

    expected = accuracy(Lab(checkpoint_set).model("defense_adv"), fashion[2], limit=30)
    assert result["accuracy"] == pytest.approx(expected) and result["n_images"] == 30
    with pytest.raises(Exception, match="images must be between|greater than maximum"):
        client.predict("toy_set", "adv", "pgd", 25, 5, 100_000, api_name="/evaluate_now")
    with pytest.raises(Exception, match="unknown model|not in the list of choices"):
        client.predict("toy_set", "nope", "pgd", 25, 5, 10, api_name="/evaluate_now")


def test_train_tab_trains_bounded_h_and_g_that_explore_can_use(client):
    status, losses, accuracies = client.predict("toy_set", 100, 1, api_name="/train")
    assert "done" in status and losses is not None and accuracies is not None
    with pytest.raises(Exception, match="images must be between|greater than maximum"):
        client.predict("toy_set", 50_000, 1, api_name="/train")
    with pytest.raises(Exception, match="epochs must be between|greater than maximum"):
        client.predict("toy_set", 100, 99, api_name="/train")
    # The session's state now holds the new h/g: Explore uses them when asked.
    args = list(explore_args(EXAMPLES[0]))
    args[-1] = True
    numbers = client.predict(*args, api_name="/explore")[6]
    from cafe_core.io.checkpoints import read_card

    trained = sorted(TRAIN_ROOT.glob("amr_*/amr.safetensors"), key=lambda p: p.stat().st_mtime)[-1]
    assert numbers["settings"]["amr_sha256"] == read_card(trained)["sha256"]


@pytest.mark.parametrize("args,message", [
    (("pgd", 300, 5, 0, "none"), "eps"),
    (("pgd", "nan", 5, 0, "none"), "eps"),
    (("pgd", 8, 10_000, 0, "none"), "steps"),
    (("deepfool", 8, 5, 0, "none"), "Unknown attack"),
    (("pgd", 8, 5, 0, "Spaceship"), "Unknown target"),
])
def test_explore_refuses_out_of_range_settings(client, args, message):
    attack, eps_255, steps, seed, target = args
    with pytest.raises(Exception, match=message):
        client.predict(*explore_args(EXAMPLES[0], eps_255, steps, seed, target, attack), api_name="/explore")


def test_non_image_upload_gives_a_clear_error_and_the_app_keeps_serving(client, tmp_path):
    bogus = tmp_path / "not_an_image.png"
    bogus.write_text("hello, I am text")
    with pytest.raises(Exception, match="(?i)not an image|could not decode|invalid image"):
        client.predict("toy_set", "adv", gradio_client.handle_file(str(bogus)), api_name="/classify")

    label, *_ = client.predict("toy_set", "adv", gradio_client.handle_file(EXAMPLES[1]), api_name="/classify")
    assert label["label"]


def test_paths_outside_the_upload_cache_are_refused(client, tmp_path):
    import httpx

    from cafe_core.serving.handlers import AppContext
    from cafe_core.serving.settings import UserError

    ctx = AppContext(tmp_path, None, [], upload_roots=[tmp_path.resolve(), EXAMPLE_DIR.resolve()])
    with pytest.raises(UserError, match="not an upload of this session"):
        ctx.upload_path({"path": "/etc/passwd"})
    with pytest.raises(UserError, match="not an upload of this session"):
        ctx.upload_path({"path": str(tmp_path / ".." / ".." / "etc" / "passwd")})
    assert str(ctx.upload_path({"path": EXAMPLES[0]})) == EXAMPLES[0]
    # Raw HTTP, as a hostile API caller would send it (gradio_client would upload the file instead).
    base = client.src.rstrip("/")
    payload = {"data": ["toy_set", "adv", {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]}
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


def _bad_files(folder):
    """Hostile or broken uploads, each with the message the visitor must see."""
    import io

    from PIL import Image

    from tests.data.test_images import _png_header_only_bomb

    good = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(good, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(jpeg, format="JPEG")
    cases = {
        "text_renamed.png": (b"just some text, not a picture", "(?i)not an image|could not decode"),
        "truncated.png": (good.getvalue()[: len(good.getvalue()) // 2], "(?i)damaged or truncated|could not decode"),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "(?i)damaged or truncated|could not decode"),
        "empty.png": (b"", "(?i)empty"),
    }
    paths = {}
    for name, (data, message) in cases.items():
        (folder / name).write_bytes(data)
        paths[name] = (folder / name, message)
    paths["bomb.png"] = (_png_header_only_bomb(folder / "bomb.png", 20000), "Image too large")
    return paths


def test_every_broken_upload_gives_a_clean_error_and_the_app_keeps_serving(client, tmp_path):
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(Exception, match=message):
            client.predict("toy_set", "adv", gradio_client.handle_file(str(path)), api_name="/classify")
        with pytest.raises(Exception, match=message):
            client.predict("toy_set", gradio_client.handle_file(str(path)), "adv", "pgd", 8, 2, 0, "none", False,
                           api_name="/explore")
        label, *_ = client.predict("toy_set", "adv", gradio_client.handle_file(EXAMPLES[0]), api_name="/classify")
        assert label["label"], f"the app stopped serving after {name}"


def test_odd_but_valid_images_are_converted_with_a_visible_note(client, tmp_path):
    import numpy as np
    from PIL import Image

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (30, 60), (255, 0, 0, 128)).save(rgba)
    sixteen = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(sixteen)
    cmyk = tmp_path / "print.jpg"
    Image.new("CMYK", (20, 20), (0, 50, 100, 0)).save(cmyk)
    tiny = tmp_path / "one.png"
    Image.new("L", (1, 1), 200).save(tiny)
    frames = [Image.new("RGB", (8, 8), c).convert("P") for c in [(255, 0, 0), (0, 255, 0)]]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    for path, note in ((rgba, "resized 30x60"), (sixteen, "16-bit"), (cmyk, "CMYK"), (tiny, "resized 1x1"),
                       (gif, "first frame")):
        label, seen, notes, steps, ood = client.predict("toy_set", "adv", gradio_client.handle_file(str(path)),
                                                        api_name="/classify")
        assert label["label"] and note in notes, (path.name, notes)


@pytest.mark.parametrize("field,value,message", [
    ("seed", -1, "seed"), ("seed", "nan", "seed"), ("steps", 0, "steps"), ("eps", -3, "eps"),
])
def test_numbers_out_of_range_via_the_api_are_refused(client, field, value, message):
    args = {"eps": 8, "steps": 2, "seed": 0}
    args[field] = value
    with pytest.raises(Exception, match=message):
        client.predict("toy_set", gradio_client.handle_file(EXAMPLES[0]), "adv", "pgd", args["eps"], args["steps"],
                       args["seed"], "none", False, api_name="/explore")


def test_a_full_queue_answers_busy_instead_of_piling_up(checkpoint_set):
    import app

    demo = app.build_app(checkpoint_set, queue_size=1, warm_up=False, workers=0)
    app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(demo.local_url, verbose=False)
        jobs = [client.submit(*explore_args(EXAMPLES[i % len(EXAMPLES)], steps=20), api_name="/explore")
                for i in range(8)]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=300)
                outcomes.append("ok")
            except Exception as err:  # noqa: BLE001 (the error text is what is checked)
                outcomes.append(str(err))
        assert any("Queue is full" in o for o in outcomes), outcomes
        assert "ok" in outcomes, "the requests that got in are answered"
        label, *_ = client.predict("toy_set", "adv", gradio_client.handle_file(EXAMPLES[0]), api_name="/classify")
        assert label["label"]
    finally:
        demo.close()
        demo.analysis_pool.close()
