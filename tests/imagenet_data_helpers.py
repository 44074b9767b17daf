"""Write ImageNet-layout JPEG folders whose pixels tell what they are (for data tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def coordinate_image(w: int, h: int) -> Image.Image:
    """R encodes x, G encodes y (0..255 across the image), B is constant."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).round().astype(np.uint8))


def index_folder(root: Path, n_train: int, n_val: int, classes: int = 3, size=(48, 36)) -> Path:
    """Constant-color images: R/8 + 32 * G/8 is the image's index in its split (survives crops, flips and
    JPEG's color rounding, which moves values by a level or two)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (8 * (i % 32), 8 * (i // 32), 100)).save(d / f"{i:05d}.JPEG", quality=100)
    return root


def coordinate_folder(root: Path, n: int, size=(200, 150)) -> Path:
    for split in ("train", "val"):
        d = root / split / "c0"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            coordinate_image(*size).save(d / f"{i:04d}.JPEG", quality=100)
    return root
