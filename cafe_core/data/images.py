"""Turn any user image (path, bytes, PIL image or numpy array) into a model-ready tensor.

Shared by the Gradio app and the CLI (never import gradio); ImageInputError texts are user-facing.

``prepare_image(..., fashion_mnist=True)`` converts an upload the way Fashion-MNIST itself was
made (Xiao et al. 2017, arXiv 1708.07747, section 2): a light background is negated (the source
photos were products on white; every training image is a light object on black), the border
colour is trimmed, the longest edge is resized to 28 keeping the aspect ratio, and the result is
centred on black, 8-bit grey. An image that is already in that format (``size`` x ``size`` with a
dark background, e.g. the gallery or any Fashion-MNIST test image) passes through unchanged.
Every conversion is returned as a :class:`PreprocessStep` with before/after thumbnails.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE

THUMB_SIDE = 96  # longest side of the before/after thumbnails of a PreprocessStep (never enlarged)
LIGHT_LEVEL = 128  # a background this light or lighter (corners and border, median) is negated
TRIM_TOLERANCE = 0.05 * 255  # Fashion-MNIST's trim: within 5% of the maximum intensity of the corners

ImageSource = Any  # str | Path | bytes | PIL.Image.Image | numpy.ndarray
_DAMAGED = "Could not decode this image (the file is damaged or truncated)"


class ImageInputError(ValueError):
    """A user-supplied image cannot be used; the message is short and user-facing."""


@dataclass(frozen=True)
class PreprocessStep:
    """One conversion applied to an image on its way to the model ("what the model sees").

    Attributes:
        name: short identifier: "transparency", "greyscale", "rgb", "negate", "trim", "resize" or "pad".
        description: one plain-English line saying what was done and why.
        before: (h, w, 3) uint8 thumbnail of the image before this step (longest side at most
            THUMB_SIDE; small images keep their size, so a 28x28 input gives 28x28 thumbnails).
        after: the same after this step (the ``before`` of the next step).
    """
    name: str
    description: str
    before: np.ndarray
    after: np.ndarray


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for a model.

    Attributes:
        tensor: (1, C, H, W) float32 in [0, 1].
        preview: (H, W, 3) uint8 of exactly what the model sees (grey replicated to 3 channels).
        notes: Human-readable notes of every conversion applied, in order.
        original_size: (width, height) after EXIF rotation, before any other conversion.
        steps: the conversions that changed pixels, in order, with before/after thumbnails
            (empty when the image was used as it is).
        light_background: whether the image had a light background (only judged with
            ``fashion_mnist=True``; None otherwise).
        negated: whether it was negated because of that background.
    """
    tensor: torch.Tensor
    preview: np.ndarray
    notes: tuple[str, ...]
    original_size: tuple[int, int]
    steps: tuple[PreprocessStep, ...] = ()
    light_background: bool | None = None
    negated: bool = False


def _check_dimensions(width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageInputError(f"Image too large: {width}x{height} pixels (limit {MAX_SIDE}x{MAX_SIDE})")


def _read_bytes(source: Any) -> bytes:
    """Read a path or bytes, enforcing the file-size limit."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"File not found: {path.name}")
        # stat() first, so a huge upload is refused without being read into memory.
        data = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
    else:
        data = bytes(source)
    if data is None or len(data) > MAX_FILE_BYTES:
        raise ImageInputError(f"File too large (limit {MAX_FILE_BYTES / 2**20:g} MB)")
    if not data:
        raise ImageInputError("This file is empty (0 bytes)")
    return data


def _decode(data: bytes, notes: list[str]) -> Image.Image:
    """Decode the first frame, refusing decompression bombs before any pixel data is read."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns at 1-2x
        try:
            img = Image.open(io.BytesIO(data))  # lazy: parses the header only
            _check_dimensions(*img.size)
            if getattr(img, "is_animated", False):
                img.seek(0)
                notes.append(f"used the first frame of an animated {img.format or 'image'}")
            img.load()  # LOAD_TRUNCATED_IMAGES stays False, so a cut file raises OSError here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            m = re.search(r"\((\d+) pixels\)", str(exc))  # PIL's message, e.g. "(400000000 pixels)"
            count = f"{int(m[1]):,} pixels" if m else "too many pixels"
            raise ImageInputError(f"Image too large: {count} (limit {MAX_SIDE}x{MAX_SIDE})") from None
        except ImageInputError:
            raise  # our own size check (a ValueError, which the last clause would swallow)
        except UnidentifiedImageError:
            raise ImageInputError("This file is not an image (could not be decoded)") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error):
            raise ImageInputError(_DAMAGED) from None  # truncated or corrupt pixel data
    return img


def _array_to_image(array: np.ndarray, notes: list[str]) -> Image.Image:
    """Convert an HxW[x1|3|4] bool/uint8/uint16/int/float array to an 8-bit PIL image."""
    a = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    if a.size == 0 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageInputError(f"Unsupported array shape {a.shape} (need HxW, HxWx1, HxWx3 or HxWx4)")
    _check_dimensions(a.shape[1], a.shape[0])
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
        notes.append("converted boolean pixels to 0/255")
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageInputError("Image array contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 255:
            raise ImageInputError(f"Float pixels must lie in [0, 1] or [0, 255] (found {lo:g} to {hi:g})")
        scale = 255.0 if hi <= 1.0 else 1.0  # floats above 1 can only mean a 0-255 range
        a = np.rint(a.astype(np.float64) * scale).astype(np.uint8)
        notes.append(f"scaled float pixel values {'[0, 1]' if scale > 1 else '[0, 255]'} to 8-bit")
    elif np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint8:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageInputError(f"Pixel values must lie in 0-65535 (found {lo} to {hi})")
        sixteen = (a.dtype.kind, a.dtype.itemsize) == ("u", 2) or hi > 255  # else plain 8-bit
        notes.extend(["scaled 16-bit pixel values to 8-bit"] if sixteen else [])
        a = (a >> 8 if sixteen else a).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageInputError(f"Unsupported array type {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))  # may share memory, but PIL never writes it


def _open(source: ImageSource, notes: list[str]) -> Image.Image:
    """Open any supported source as a new PIL image (the caller's object is never changed)."""
    if isinstance(source, np.ndarray):
        return _array_to_image(source, notes)
    if isinstance(source, Image.Image):
        _check_dimensions(*source.size)
        try:
            img = source.copy()  # may load a lazily opened file, which can still fail
        except (OSError, SyntaxError, ValueError, EOFError):
            raise ImageInputError(_DAMAGED) from None
        if getattr(source, "is_animated", False):  # keep the frame the caller chose
            notes.append(f"used frame {source.tell()} of an animated image")
    elif isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        img = _decode(_read_bytes(source), notes)
    else:
        raise ImageInputError(f"Unsupported image input of type {type(source).__name__}")
    try:  # a malformed EXIF block must not make the picture itself unusable
        if img.getexif().get(0x0112, 1) in range(2, 9):  # tag 0x0112 = Orientation; 1 = upright
            img = ImageOps.exif_transpose(img)
            notes.append("rotated per EXIF orientation")
    except Exception:
        notes.append("ignored an unreadable EXIF orientation")
    return img


def open_image(source: ImageSource) -> Image.Image:
    """Open a path, bytes, PIL image or numpy array as an upright PIL image.

    Raises:
        ImageInputError: if the input is not a usable image (too large, empty, damaged, ...).
    """
    return _open(source, [])


def _to_8bit(img: Image.Image, notes: list[str]) -> Image.Image:
    """Reduce 16/32-bit integer and float greyscale to 'L' (PIL's own convert clips instead)."""
    a = np.asarray(img).astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageInputError("Image contains NaN or infinite pixel values")
    if img.mode == "F":  # [0, 1] data, otherwise already 0-255 data
        a, note = a * (255 if a.max() <= 1 else 1), "scaled floating-point pixel values to 8-bit"
    elif a.max() <= 65535:  # 16-bit: fixed >> 8 keeps absolute brightness (no contrast stretch)
        a, note = np.floor(a / 256), "scaled 16-bit pixel values to 8-bit"
    else:  # wider 'I' data (rare, e.g. 32-bit TIFF) has no known range: use its actual maximum
        a, note = a * 255 / a.max(), f"scaled integer pixel values (max {int(a.max())}) to 8-bit"
    notes.append(note)
    return Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8))


def _thumbnail(img: Image.Image) -> np.ndarray:
    """(h, w, 3) uint8 copy of ``img`` with its longest side at most THUMB_SIDE (never enlarged)."""
    w, h = img.size
    if max(w, h) > THUMB_SIDE:
        scale = THUMB_SIDE / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                         reducing_gap=2.0)
    return np.array(img.convert("RGB"), dtype=np.uint8)


class _Steps:
    """Collects PreprocessSteps; each step's ``after`` thumbnail is the next one's ``before``."""

    def __init__(self) -> None:
        self.steps: list[PreprocessStep] = []
        self._last: tuple[Image.Image, np.ndarray] | None = None

    def add(self, name: str, description: str, before: Image.Image, after: Image.Image) -> None:
        thumb = self._last[1] if self._last is not None and self._last[0] is before else _thumbnail(before)
        after_thumb = _thumbnail(after)
        self.steps.append(PreprocessStep(name, description, thumb, after_thumb))
        self._last = (after, after_thumb)


def _fit(img: Image.Image, size: int, fill: int, notes: list[str], steps: _Steps | None = None) -> Image.Image:
    """Resize keeping aspect ratio (longer side == size), then pad centred to size x size."""
    steps = steps if steps is not None else _Steps()
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        # LANCZOS avoids aliasing when shrinking; BICUBIC is smoother when enlarging.
        resized = img.resize((nw, nh), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
        steps.add("resize", f"{'Shrank' if scale < 1 else 'Enlarged'} {w}x{h} to {nw}x{nh}: the longest edge "
                  f"to {size} pixels, keeping the aspect ratio.", img, resized)
        img = resized
    if (nw, nh) == (size, size):
        notes.append(f"resized {w}x{h} -> {size}x{size}")
        return img
    canvas = Image.new(img.mode, (size, size), (fill,) * len(img.getbands()))
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    shade = {0: "black", 255: "white"}.get(fill, f"grey ({fill})")
    steps.add("pad", f"Centred the {nw}x{nh} image on a {size}x{size} {shade} square.", img, canvas)
    notes.append(f"resized {w}x{h} -> {nw}x{nh} keeping aspect ratio, padded to {size}x{size}"
                 if (nw, nh) != (w, h) else f"padded {w}x{h} to {size}x{size}")
    return canvas


def _corner_colour(a: np.ndarray) -> tuple[int, int]:
    """(median of the four corner patches, median of the outer frame) of a 2-D uint8 array.

    A patch is k x k with k = 1/32 of the shorter side (at least 1 pixel), so one speck of noise
    or an object touching one corner does not decide the background colour.
    """
    h, w = a.shape
    k = max(1, min(h, w) // 32)
    corners = np.concatenate([a[:k, :k].ravel(), a[:k, -k:].ravel(), a[-k:, :k].ravel(), a[-k:, -k:].ravel()])
    frame = np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k, :k].ravel(), a[k:-k, -k:].ravel()])
    return int(np.median(corners)), int(np.median(frame))


def _fashion_mnist_style(img: Image.Image, size: int, auto_negate: bool, notes: list[str], steps: _Steps
                         ) -> tuple[Image.Image, bool, bool]:
    """Negate a light background and trim the border colour (greyscale 'L' in and out).

    Returns (image, light background?, negated?); resizing and padding are left to ``_fit``.
    """
    a = np.asarray(img)
    corner, frame = _corner_colour(a)
    light = corner >= LIGHT_LEVEL and frame >= LIGHT_LEVEL
    negated = False
    if light and auto_negate:
        # (corner - p) * 255 / corner: the background becomes black (0), black becomes white (255);
        # for a pure white background this is exactly 255 - p.
        mapped = np.clip(np.rint((corner - a.astype(np.float64)) * (255.0 / corner)), 0, 255).astype(np.uint8)
        negated_img = Image.fromarray(mapped)
        steps.add("negate", f"Negated: the light background (grey {corner}) became black and dark parts light, "
                  "as Fashion-MNIST did with its product photos on white.", img, negated_img)
        notes.append(f"negated the light background (grey {corner} -> black)")
        img, a, negated = negated_img, mapped, True
        corner = 0
    elif light:
        notes.append(f"kept the light background (grey {corner}): automatic negation is off, but the network "
                     "only saw light objects on black")
    if img.size == (size, size) and not light:
        notes.append(f"already {size}x{size} with a dark background, like Fashion-MNIST: not trimmed or resized")
        return img, light, negated
    differs = np.abs(a.astype(np.int16) - corner) > TRIM_TOLERANCE
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if rows.size == 0:
        notes.append("one flat colour: nothing to trim")
        return img, light, negated
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    if box != (0, 0, *img.size):
        trimmed = img.crop(box)
        w, h = img.size
        steps.add("trim", f"Trimmed the border: cut {w}x{h} to the {trimmed.size[0]}x{trimmed.size[1]} box around "
                  f"everything that differs from the corner colour (grey {corner}).", img, trimmed)
        notes.append(f"trimmed the border colour: {w}x{h} -> {trimmed.size[0]}x{trimmed.size[1]}")
        img = trimmed
    return img, light, negated


def prepare_image(source: ImageSource, channels: int, size: int, fill: int = 0, *, fashion_mnist: bool = False,
                  auto_negate: bool = True) -> PreparedImage:
    """Convert any user image to a (1, channels, size, size) tensor plus a preview and notes.

    Args:
        source: Path, bytes, PIL image or numpy array.
        channels: 1 (greyscale, e.g. Fashion-MNIST) or 3 (RGB).
        size: Output side; the image is fitted inside and padded, never cropped (except the
            trimmed border with ``fashion_mnist``).
        fill: Grey level (0-255) for the padding and the background behind transparency.
        fashion_mnist: convert the way Fashion-MNIST was made (module docstring): transparency on
            white, light background negated, border colour trimmed, longest edge to ``size``,
            centred on ``fill`` (black by default). Needs ``channels`` 1. Images already in that
            format (``size`` x ``size``, dark background) come out exactly as they went in.
        auto_negate: with ``fashion_mnist``, negate a light background (False keeps it as it is).

    Raises:
        ImageInputError: for unusable user input (plain ValueError for bad arguments).
    """
    if channels not in (1, 3) or int(size) != size or size < 1 or fill not in range(256):
        raise ValueError(f"need channels 1|3, size >= 1, fill 0-255; got {channels}, {size}, {fill}")
    if fashion_mnist and channels != 1:
        raise ValueError(f"fashion_mnist preprocessing makes greyscale images; got channels={channels}")
    notes: list[str] = []
    steps = _Steps()
    img = _open(source, notes)
    original_size = img.size
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img, notes)
    if img.mode not in ("L", "LA", "RGB", "RGBA") or "transparency" in img.info:
        # Palette, 1-bit, CMYK, YCbCr, premultiplied alpha, tRNS transparency, ...
        alpha = img.mode.endswith(("A", "a")) or "transparency" in img.info  # not LAB
        target = ("LA" if img.mode == "La" else "RGBA") if alpha else ("L" if img.mode == "1" else "RGB")
        notes.append(f"converted {img.mode} to {target}")
        try:
            img = img.convert(target)
        except ValueError:
            raise ImageInputError(f"Unsupported image mode {img.mode}") from None
    if img.mode in ("LA", "RGBA"):
        # Composite on `fill`, not white: Fashion-MNIST has light objects on a black background.
        # With fashion_mnist on white instead: its source photos were products on white, and the
        # light background is then negated like theirs.
        matte = 255 if fashion_mnist else fill
        base = img.mode[:-1]
        background = Image.new(base, img.size, (matte,) * len(base))
        background.paste(img.convert(base), mask=img.getchannel("A"))
        shade = {0: "black", 255: "white"}.get(matte, f"grey ({matte})")
        notes.append(f"composited {img.mode} transparency onto a {shade} background")
        steps.add("transparency", f"Filled the transparent parts with {shade}.", img, background)
        img = background
    if channels == 1 and img.mode != "L":
        grey = img.convert("L")  # ITU-R 601-2 luma: L = 0.299 R + 0.587 G + 0.114 B
        notes.append("converted RGB to greyscale (ITU-R 601 luma)")
        steps.add("greyscale", "Converted the colours to 8-bit grey (the network sees one grey channel).", img, grey)
        img = grey
    elif channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")
        notes.append("replicated greyscale to 3 RGB channels")
    light, negated = None, False
    if fashion_mnist:
        img, light, negated = _fashion_mnist_style(img, int(size), auto_negate, notes, steps)
    img = _fit(img, int(size), int(fill), notes, steps)
    hwc = np.array(img, dtype=np.uint8).reshape(img.size[1], img.size[0], -1)  # writable copy
    tensor = torch.from_numpy(hwc.transpose(2, 0, 1).copy()).float().div_(255.0).unsqueeze(0)
    preview = np.repeat(hwc, 3 // hwc.shape[2], axis=2)  # grey -> 3 equal channels
    return PreparedImage(tensor, preview, tuple(notes), original_size, tuple(steps.steps), light, negated)


def image_to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Convert a (1, C, H, W) or (C, H, W) tensor to (H, W, 3) uint8 for display (clamped, grey
    replicated to 3 channels)."""
    t = tensor.detach().to("cpu", torch.float32)
    t = t[0] if t.ndim == 4 and t.shape[0] == 1 else t
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected (1, C, H, W) or (C, H, W) with C 1 or 3, got {tuple(t.shape)}")
    out = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(out, 3 // out.shape[2], axis=2)  # repeat copies: contiguous, not shared


def image_from_uint8(array: np.ndarray, channels: int) -> torch.Tensor:
    """Inverse of :func:`image_to_uint8`: (H, W, 3) uint8 -> (1, C, H, W) float in [0, 1]
    (grey models take the first channel)."""
    tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float().div(255)  # owned, writable
    return (tensor[:1] if channels == 1 else tensor).unsqueeze(0)
