"""Tests of cafe_core.data.images against real image files written with PIL into tmp_path."""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from cafe_core.data import images
from cafe_core.data.images import ImageInputError, image_to_uint8, open_image, prepare_image

RNG = np.random.default_rng(0)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _check_output(p: images.PreparedImage, channels: int, size: int) -> None:
    """Invariants of every PreparedImage: dtype, range, shapes, preview == tensor * 255."""
    assert p.tensor.dtype == torch.float32
    assert p.tensor.shape == (1, channels, size, size)
    assert 0.0 <= float(p.tensor.min()) and float(p.tensor.max()) <= 1.0
    assert p.preview.dtype == np.uint8 and p.preview.shape == (size, size, 3)
    expected = (p.tensor[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(p.preview, np.repeat(expected, 3 // channels, axis=2))
    np.testing.assert_array_equal(image_to_uint8(p.tensor), p.preview)


def _values(p: images.PreparedImage) -> np.ndarray:
    """Model input as 0-255 integers, (C, H, W)."""
    return (p.tensor[0] * 255).round().to(torch.int64).numpy()


def _png_header_only_bomb(path: Path, side: int) -> Path:
    """Write a valid 1-bit side x side PNG of all zeros; it compresses to a few KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------ colour conversions
def test_rgb_png_three_and_one_channel(tmp_path):
    path = _save(Image.new("RGB", (28, 28), (200, 100, 50)), tmp_path / "c.png")
    rgb = prepare_image(path, channels=3, size=28)
    _check_output(rgb, 3, 28)
    assert (_values(rgb)[:, 0, 0] == [200, 100, 50]).all() and (_values(rgb) == _values(rgb)[:, :1, :1]).all()
    assert rgb.notes == () and rgb.original_size == (28, 28)
    grey = prepare_image(str(path), channels=1, size=28)
    _check_output(grey, 1, 28)
    assert (_values(grey) == 124).all()  # 0.299*200 + 0.587*100 + 0.114*50 = 124.2
    assert grey.notes == ("converted RGB to greyscale (ITU-R 601 luma)",)


@pytest.mark.parametrize("fill,bg", [(0, 0), (255, 255)])
def test_rgba_transparency_composited_on_fill(tmp_path, fill, bg):
    a = np.zeros((4, 4, 4), np.uint8)
    a[:, :2] = (255, 255, 255, 255)      # opaque white
    a[:, 2:] = (255, 255, 255, 0)        # fully transparent
    a[0, 0] = (200, 200, 200, 128)       # half transparent
    path = _save(Image.fromarray(a), tmp_path / "t.png")
    p = prepare_image(path, channels=1, size=4, fill=fill)
    _check_output(p, 1, 4)
    v = _values(p)[0]
    assert (v[:, 2:] == bg).all() and (v[1:, :2] == 255).all()
    assert abs(v[0, 0] - (200 * 128 + bg * 127) / 255) <= 1
    assert any("composited RGBA transparency onto a" in n for n in p.notes)


def test_greyscale_l_to_one_and_three_channels(tmp_path):
    path = _save(Image.new("L", (10, 10), 77), tmp_path / "g.png")
    one = prepare_image(path, channels=1, size=10)
    assert (_values(one) == 77).all() and one.notes == ()
    three = prepare_image(path, channels=3, size=10)
    _check_output(three, 3, 10)
    assert (_values(three) == 77).all() and three.notes == ("replicated greyscale to 3 RGB channels",)


def test_sixteen_bit_png_scaled_to_8_bit(tmp_path):
    path = _save(Image.fromarray(np.array([[65535, 32768], [0, 256]], np.uint16)), tmp_path / "d.png")
    assert Image.open(path).mode == "I;16"
    p = prepare_image(path, channels=1, size=2)
    _check_output(p, 1, 2)
    assert _values(p)[0].tolist() == [[255, 128], [0, 1]]
    assert "scaled 16-bit pixel values to 8-bit" in p.notes


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "k.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    p = prepare_image(path, channels=3, size=16)
    assert np.abs(_values(p)[:, 8, 8] - [255, 0, 0]).max() <= 3  # pure red
    assert "converted CMYK to RGB" in p.notes


def test_palette_gif(tmp_path):
    path = _save(Image.new("RGB", (6, 6), (0, 0, 255)).convert("P"), tmp_path / "p.gif")
    assert Image.open(path).mode == "P"
    rgb = prepare_image(path, channels=3, size=6)
    assert (_values(rgb)[:, 3, 3] == [0, 0, 255]).all()
    grey = prepare_image(path, channels=1, size=6)
    assert (_values(grey) == 29).all()  # 0.114 * 255 = 29.07
    assert grey.notes[0] == "converted P to RGB"


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c).convert("P") for c in [(255, 0, 0), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    p = prepare_image(path, channels=3, size=8)
    assert (_values(p)[:, 4, 4] == [255, 0, 0]).all()
    assert "used the first frame of an animated GIF" in p.notes


def test_exif_orientation_rotates(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # stored: left half white, right half black
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = _save(Image.fromarray(a), tmp_path / "r.jpg", exif=exif, quality=95)
    p = prepare_image(path, channels=1, size=28, fill=128)
    _check_output(p, 1, 28)
    assert p.original_size == (20, 40)  # upright: portrait
    v = _values(p)[0]
    # 20x40 -> 14x28, centred: columns 0-6 and 21-27 are padding; top half white, bottom black.
    assert (v[:, :7] == 128).all() and (v[:, 21:] == 128).all()
    assert v[5, 14] > 240 and v[22, 14] < 15
    assert "rotated per EXIF orientation" in p.notes
    assert "resized 20x40 -> 14x28 keeping aspect ratio, padded to 28x28" in p.notes


def test_one_pixel_image_upscaled(tmp_path):
    path = _save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "one.png")
    p = prepare_image(path, channels=3, size=5)
    _check_output(p, 3, 5)
    assert (_values(p) == np.array([10, 20, 30])[:, None, None]).all()
    assert p.notes == ("resized 1x1 -> 5x5",)


def test_resize_keeps_aspect_and_pads_with_fill(tmp_path):
    path = _save(Image.new("L", (56, 28), 200), tmp_path / "wide.png")
    p = prepare_image(path, channels=1, size=28, fill=9)
    _check_output(p, 1, 28)
    v = _values(p)[0]
    assert (v[:7] == 9).all() and (v[21:] == 9).all() and (v[7:21] == 200).all()
    assert p.notes == ("resized 56x28 -> 28x14 keeping aspect ratio, padded to 28x28",)


# ------------------------------------------------------------------------------- bad files
def test_non_image_bytes_with_png_suffix(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(b"this is a text file, not a picture\n" * 10)
    with pytest.raises(ImageInputError, match="not an image"):
        prepare_image(path, channels=1, size=28)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        open_image(tmp_path / "empty.png")
    with pytest.raises(ImageInputError, match="empty"):
        open_image(b"")


def test_missing_file(tmp_path):
    with pytest.raises(ImageInputError, match="not found"):
        open_image(tmp_path / "nope.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    noise = Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        prepare_image(path, channels=3, size=32)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bomb_helper_writes_a_valid_png(tmp_path):
    with Image.open(_png_header_only_bomb(tmp_path / "small.png", 1000)) as img:
        assert img.mode == "1" and img.size == (1000, 1000) and img.getextrema() == (0, 0)


@pytest.mark.parametrize("side", [5000, 10000, 20000])  # own check / PIL warning / PIL error
def test_decompression_bomb_rejected_without_decoding(tmp_path, monkeypatch, side):
    path = _png_header_only_bomb(tmp_path / "bomb.png", side)
    assert path.stat().st_size < 100_000
    def no_decode(self):
        raise AssertionError("pixel data must not be decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    start = time.perf_counter()
    with pytest.raises(ImageInputError, match="Image too large.*limit 4096x4096"):
        prepare_image(path, channels=1, size=28)
    assert time.perf_counter() - start < 1.0


def test_decompression_bomb_made_by_pil(tmp_path):
    path = _save(Image.new("1", (4097, 8)), tmp_path / "wide.png", optimize=True)
    with pytest.raises(ImageInputError, match=r"Image too large: 4097x8 pixels \(limit 4096x4096\)"):
        open_image(path)


def test_file_over_size_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * (images.MAX_FILE_BYTES + 1))
    with pytest.raises(ImageInputError, match="File too large.*limit 10 MB"):
        open_image(path)
    with pytest.raises(ImageInputError, match="limit 10 MB"):
        open_image(path.read_bytes())


# ----------------------------------------------------------------------- other input types
def test_bytes_and_pil_inputs(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (3, 3), (1, 2, 3)).save(buf, "PNG")
    assert (_values(prepare_image(buf.getvalue(), 3, 3))[:, 0, 0] == [1, 2, 3]).all()
    assert (_values(prepare_image(Image.open(buf), 3, 3))[:, 0, 0] == [1, 2, 3]).all()


def test_numpy_arrays():
    u8 = np.full((4, 4, 3), (9, 8, 7), np.uint8)
    assert (_values(prepare_image(u8, 3, 4))[:, 0, 0] == [9, 8, 7]).all()
    assert (_values(prepare_image(np.full((4, 4, 1), 0.5), 1, 4)) == 128).all()
    assert (_values(prepare_image(np.full((4, 4), 40000, np.uint16), 1, 4)) == 156).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert (_values(prepare_image(rgba, 1, 4, fill=50)) == 50).all()  # fully transparent
    b = prepare_image(np.eye(4, dtype=bool), 1, 4)
    assert (_values(b)[0] == np.eye(4) * 255).all() and "converted boolean pixels to 0/255" in b.notes


@pytest.mark.parametrize("bad,msg", [
    (np.array([[0.5, np.nan]]), "NaN"),
    (np.array([[0.5, np.inf]]), "NaN or infinite"),
    (np.zeros((2, 2, 2, 2), np.uint8), r"shape \(2, 2, 2, 2\)"),
    (np.zeros((4, 4, 2), np.uint8), r"need HxW, HxWx1, HxWx3 or HxWx4\)"),
    (np.zeros((0, 4), np.uint8), r"shape \(0, 4\)"),
    (np.array([[-0.5, 0.2]]), "must lie in"),
    (np.zeros((2, 2), np.complex64), "Unsupported array type"),
])
def test_bad_arrays(bad, msg):
    with pytest.raises(ImageInputError, match=msg):
        prepare_image(bad, channels=1, size=4)


def test_caller_image_not_modified():
    src = Image.fromarray(RNG.integers(0, 256, (30, 50, 4), dtype=np.uint8))
    src.info["note"] = "x"
    before = np.array(src)
    p = prepare_image(src, channels=1, size=28)
    _check_output(p, 1, 28)
    assert src.mode == "RGBA" and src.size == (50, 30) and src.info == {"note": "x"}
    np.testing.assert_array_equal(np.array(src), before)
    arr = before.copy()
    prepare_image(arr, channels=3, size=28)
    np.testing.assert_array_equal(arr, before)


def test_bad_arguments_are_plain_value_errors():
    img = Image.new("L", (2, 2))
    for kwargs in ({"channels": 2, "size": 4}, {"channels": 1, "size": 0}, {"channels": 1, "size": 4, "fill": 300}):
        with pytest.raises(ValueError) as info:
            prepare_image(img, **kwargs)
        assert not isinstance(info.value, ImageInputError)


def test_image_to_uint8_clamps_and_replicates():
    t = torch.tensor([[[-0.5, 0.5], [1.0, 2.0]]])
    out = image_to_uint8(t)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[:, :, 0].tolist() == [[0, 128], [255, 255]] and (out == out[:, :, :1]).all()
    assert image_to_uint8(torch.zeros(1, 3, 2, 2)).shape == (2, 2, 3)
    with pytest.raises(ValueError):
        image_to_uint8(torch.zeros(2, 2))


def test_module_imports_no_gradio():
    import ast

    tree = ast.parse(Path(images.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {name.split(".")[0] for name in names} <= {"__future__", "io", "re", "struct", "warnings",
                                                    "dataclasses", "pathlib", "typing", "numpy",
                                                    "torch", "PIL"}


# --------------------------------------------------- Fashion-MNIST-style preprocessing (issue 19)
def _steps(p: images.PreparedImage) -> list[str]:
    return [s.name for s in p.steps]


def test_fashion_mnist_style_leaves_the_test_set_unchanged(tmp_path):
    """All 10,000 test images, written as 28x28 8-bit PNGs and read through the app's path for a file,
    give bit-identical model inputs, with no step applied."""
    from cafe_core.data.datasets import DEBIAN_FASHION_MNIST, load_split

    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("needs Debian package dataset-fashion-mnist")
    test = load_split("fashion-mnist", "test", download=False)
    assert len(test) == 10_000
    start = time.perf_counter()
    changed = []
    for i, pixels in enumerate(test.images[:, 0].numpy()):
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        p = prepare_image(str(path), 1, 28, fashion_mnist=True)
        if not torch.equal(p.tensor, test.images[i:i + 1].float() / 255) or p.steps or p.negated:
            changed.append(i)
    assert changed == []
    assert time.perf_counter() - start < 30


def test_fashion_mnist_style_leaves_the_gallery_unchanged():
    gallery = sorted((Path(__file__).resolve().parents[2] / "assets" / "examples").glob("*.png"))
    assert len(gallery) == 10
    for path in gallery:
        p = prepare_image(path, 1, 28, fashion_mnist=True)
        assert torch.equal(p.tensor, prepare_image(path, 1, 28).tensor) and p.steps == () and not p.negated
        assert p.light_background is False
        assert p.notes[-1] == "already 28x28 with a dark background, like Fashion-MNIST: not trimmed or resized"


def _product(bg: int = 255) -> np.ndarray:
    """A 100x60 (w x h) product shot: a dark 40x20 block (grey 40) at x 10-49, y 30-49 on a light background."""
    a = np.full((60, 100, 3), bg, np.uint8)
    a[30:50, 10:50] = 40
    return a


def test_fashion_mnist_style_negates_trims_resizes_and_pads_a_product_photo():
    p = prepare_image(_product(240), 1, 28, fashion_mnist=True)
    _check_output(p, 1, 28)
    assert _steps(p) == ["greyscale", "negate", "trim", "resize", "pad"]
    assert p.light_background is True and p.negated is True
    v = _values(p)[0]
    # 40x20 -> 28x14, centred vertically: rows 7-20; negated (240 - 40) * 255 / 240 = 212.5 -> 212.
    assert (v[:7] == 0).all() and (v[21:] == 0).all() and (v[7:21] == 212).all()
    assert p.notes[1:] == ("negated the light background (grey 240 -> black)",
                           "trimmed the border colour: 100x60 -> 40x20",
                           "resized 40x20 -> 28x14 keeping aspect ratio, padded to 28x28")
    for step in p.steps:
        assert step.description and "\n" not in step.description
        for thumb in (step.before, step.after):
            assert thumb.dtype == np.uint8 and thumb.ndim == 3 and thumb.shape[2] == 3
            assert max(thumb.shape[:2]) <= images.THUMB_SIDE
    assert p.steps[0].before.shape == (58, 96, 3) and (p.steps[0].before[0, 0] == 240).all()  # 100x60 shrunk to 96 wide
    np.testing.assert_array_equal(p.steps[-1].after, p.preview)
    for earlier, later in zip(p.steps, p.steps[1:]):
        np.testing.assert_array_equal(earlier.after, later.before)


def test_fashion_mnist_style_auto_negate_off_keeps_the_light_background():
    p = prepare_image(_product(), 1, 28, fashion_mnist=True, auto_negate=False)
    assert "negate" not in _steps(p) and p.light_background is True and not p.negated
    assert any("automatic negation is off" in n for n in p.notes)
    v = _values(p)[0]
    assert (v[7:21] == 40).all() and (v[0] == 0).all()  # still trimmed to the dark block; padded with black


def test_fashion_mnist_style_dark_background_is_trimmed_not_negated():
    a = np.zeros((80, 80), np.uint8)
    a[20:60, 30:50] = 200  # a light 20x40 object on black
    p = prepare_image(a, 1, 28, fashion_mnist=True)
    assert _steps(p) == ["trim", "resize", "pad"] and p.light_background is False
    v = _values(p)[0]
    assert (v[:, 7:21] == 200).all() and (v[:, :7] == 0).all() and (v[:, 21:] == 0).all()


def test_fashion_mnist_style_flat_and_transparent_images():
    white = prepare_image(np.full((50, 50), 250, np.uint8), 1, 28, fashion_mnist=True)
    assert (_values(white) == 0).all() and "one flat colour: nothing to trim" in white.notes
    assert _steps(white) == ["negate", "resize"]
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[10:30, 5:25] = (20, 20, 20, 255)  # a dark opaque square on a transparent background
    p = prepare_image(rgba, 1, 28, fashion_mnist=True)
    assert _steps(p)[:3] == ["transparency", "greyscale", "negate"]
    assert "composited RGBA transparency onto a white background" in p.notes
    assert (_values(p) >= 230).all()  # the square, negated, fills the frame


def test_fashion_mnist_style_needs_one_channel():
    with pytest.raises(ValueError, match="greyscale"):
        prepare_image(Image.new("L", (4, 4)), 3, 28, fashion_mnist=True)


def test_plain_conversion_also_lists_its_steps():
    p = prepare_image(Image.new("RGB", (56, 28), (200, 200, 200)), 1, 28)
    assert _steps(p) == ["greyscale", "resize", "pad"] and p.light_background is None and not p.negated
    assert prepare_image(Image.new("L", (28, 28)), 1, 28).steps == ()
