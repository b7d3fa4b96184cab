"""``python -m cafe_core export-examples``: real test images per class as PNG (the app's gallery)."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..data.datasets import load_split
    from ..data.images import image_to_uint8

    test = load_split(args.dataset, "test", args.data_root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(test.class_names):
        indices = (test.labels == label).nonzero().flatten()[: args.per_class].tolist()
        for index in indices:
            pixels = image_to_uint8(test[index][0])
            image = Image.fromarray(pixels[..., 0] if test.images.shape[1] == 1 else pixels)
            slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
            image.save(out / f"{label}_{slug}_test{index}.png")
            print(f"{out / f'{label}_{slug}_test{index}.png'}")
    return 0
