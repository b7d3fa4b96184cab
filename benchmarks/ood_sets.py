"""Out-of-distribution image sets built offline for benchmarks/ood.py (seeded, no downloads).

Each builder returns a list of "uploads" (numpy arrays or PIL images, any size) or a uint8 tensor
of model inputs (N, 1, 28, 28); ``model_inputs`` turns uploads into what the model sees through
the app's own path (``prepare_image`` with or without the Fashion-MNIST-style preprocessing).
Photos come from scikit-image's bundled data; glyphs from the system's TrueType fonts
(DejaVu, Liberation: ``fc-list``), with Pillow's built-in font as the fallback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cafe_core.data.images import prepare_image

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
PHOTOS = ("astronaut", "camera", "coffee", "rocket", "coins", "moon", "page", "text", "brick", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "horse", "clock", "cell", "logo",
          "colorwheel", "chelsea", "microaneurysms")


def model_inputs(uploads: Sequence, fashion_mnist: bool) -> torch.Tensor:
    """What the model sees for each upload: (N, 1, 28, 28) uint8 through ``prepare_image``."""
    out = torch.empty((len(uploads), 1, 28, 28), dtype=torch.uint8)
    for i, upload in enumerate(uploads):
        out[i] = prepare_image(upload, 1, 28, fashion_mnist=fashion_mnist).tensor[0].mul(255).round().to(torch.uint8)
    return out


def fonts() -> list[ImageFont.FreeTypeFont | None]:
    """Regular/bold/oblique TrueType fonts found on this machine ([None] = Pillow's own font)."""
    found = sorted(p for d in FONT_DIRS if d.is_dir() for p in d.glob("*.ttf") if "ExtraLight" not in p.name)
    return [str(p) for p in found] or [None]


def _font(path, size: int):
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def _glyph(text: str, font_path, size: int, fg: int, bg: int, rng: np.random.Generator, side: int) -> Image.Image:
    """``text`` drawn in ``fg`` on a ``side`` x ``side`` ``bg`` canvas, centred with a random shift and tilt."""
    canvas = Image.new("L", (side * 2, side * 2), bg)
    draw = ImageDraw.Draw(canvas)
    font = _font(font_path, size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    stroke = int(rng.integers(0, 2 + size // 24))
    draw.text((side - (left + right) / 2, side - (top + bottom) / 2), text, fill=fg, font=font, stroke_width=stroke,
              stroke_fill=fg)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BICUBIC, fillcolor=bg)
    dx, dy = (int(v) for v in rng.integers(-side // 10, side // 10 + 1, 2))
    return canvas.crop((side // 2 + dx, side // 2 + dy, side // 2 + dx + side, side // 2 + dy + side))


def rendered_digits(n: int, seed: int) -> list[np.ndarray]:
    """MNIST-like digits: a white glyph in a 20x20 box centred on a 28x28 black square."""
    rng = np.random.default_rng(seed)
    paths, out = fonts(), []
    for _ in range(n):
        digit = str(rng.integers(0, 10))
        glyph = _glyph(digit, paths[rng.integers(len(paths))], 80, 255, 0, rng, 112)
        box = glyph.getbbox() or (0, 0, 112, 112)
        glyph = glyph.crop(box)
        scale = 20 / max(glyph.size)
        glyph = glyph.resize((max(1, round(glyph.size[0] * scale)), max(1, round(glyph.size[1] * scale))),
                             Image.Resampling.LANCZOS)
        canvas = Image.new("L", (28, 28), 0)
        canvas.paste(glyph, ((28 - glyph.size[0]) // 2, (28 - glyph.size[1]) // 2))
        out.append(np.array(canvas))
    return out


def rendered_letters(n: int, seed: int) -> list[np.ndarray]:
    """A letter (A-Z, a-z) in black on a white 64-160 px square, like a photo of a printed page."""
    rng = np.random.default_rng(seed)
    paths, out = fonts(), []
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    for _ in range(n):
        side = int(rng.integers(64, 161))
        bg = int(rng.integers(225, 256))
        glyph = _glyph(letters[rng.integers(len(letters))], paths[rng.integers(len(paths))],
                       int(side * rng.uniform(0.45, 0.8)), int(rng.integers(0, 60)), bg, rng, side)
        out.append(np.array(glyph))
    return out


def photos(n: int, seed: int) -> list[np.ndarray]:
    """Random crops (20-100% of the shorter side, aspect 3:4 to 4:3, random flips) of the photos and
    pictures bundled with scikit-image, colour kept."""
    import skimage.data

    rng = np.random.default_rng(seed)
    sources = []
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        a = (a.astype(np.uint8) * 255) if a.dtype == bool else a
        sources.append(a[..., :3] if a.ndim == 3 else a)
    out = []
    for i in range(n):
        a = sources[i % len(sources)]
        h, w = a.shape[:2]
        side = rng.uniform(0.2, 1.0) * min(h, w)
        aspect = rng.uniform(0.75, 4 / 3)
        ch, cw = min(h, int(side * aspect)), min(w, int(side / aspect))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = a[y:y + ch, x:x + cw]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def faces(n: int) -> list[np.ndarray]:
    """The 25x25 grey faces of scikit-image's Labeled Faces in the Wild subset (first ``n``, at most 100;
    the other 100 images of the subset are not faces)."""
    import skimage.data

    lfw = skimage.data.lfw_subset()
    return [np.rint(face * 255).astype(np.uint8) for face in lfw[:min(n, 100)]]


def uniform_noise(n: int, seed: int) -> torch.Tensor:
    """Independent uniform 0-255 pixels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)


def gaussian_noise(n: int, seed: int) -> torch.Tensor:
    """Gaussian pixels: mean and standard deviation drawn per image (mean 0-255, sd 10-100), clipped."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.rand(n, 1, 1, 1, generator=g) * 255
    sd = 10 + torch.rand(n, 1, 1, 1, generator=g) * 90
    return (mean + sd * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 255).round().to(torch.uint8)


def flat_colours(n: int, seed: int) -> list[np.ndarray]:
    """Uploads of one random RGB colour, 32-128 px."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(32, 129, 2))
        out.append(np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (h, w, 3)).copy())
    return out


def inverted(images: torch.Tensor) -> torch.Tensor:
    """255 - x: dark garments on white, at 28x28 (what the model would see without negation)."""
    return 255 - images


def shrunk_20(images: torch.Tensor) -> torch.Tensor:
    """Each 28x28 image resized to 20x20 (LANCZOS) and centred on a black 28x28 square (MNIST's framing)."""
    out = torch.zeros_like(images)
    for i, img in enumerate(images[:, 0].numpy()):
        small = np.array(Image.fromarray(img).resize((20, 20), Image.Resampling.LANCZOS))
        out[i, 0, 4:24, 4:24] = torch.from_numpy(small)
    return out


def product_renders(images: torch.Tensor, seed: int) -> list[np.ndarray]:
    """Product-photo style renders: each garment enlarged 3-6x (bicubic), dark on an off-white
    background (grey 230-255) with margins of 5-60% on each side and faint noise (sd 2)."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images[:, 0].numpy():
        scale = float(rng.uniform(3, 6))
        side = round(28 * scale)
        big = np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)
        bg = float(rng.integers(230, 256))
        margins = (rng.uniform(0.05, 0.6, 4) * side).astype(int)  # left, top, right, bottom
        canvas = np.full((side + margins[1] + margins[3], side + margins[0] + margins[2]), bg)
        canvas[margins[1]:margins[1] + side, margins[0]:margins[0] + side] = bg * (1 - big / 255)
        canvas += rng.normal(0, 2, canvas.shape)
        out.append(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    return out
