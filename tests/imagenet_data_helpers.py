"""Write ImageNet-layout JPEG folders whose pixels tell what they are, and read the pixels back (data tests)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from resnext.config import DataConfig
from resnext.data import Placement, build_loaders
from resnext.data.imagenet_folder import MEAN, STD
from resnext.data.plan import per_process


def cfg(root, backend: str, **kw):
    """A small data config: 32-pixel crops, jitter and lighting off unless asked; no start-up check of the files
    (data.prescan: these tests are of the loaders, which meet a bad file themselves when the check is off)."""
    base = dict(dataset="imagenet", root=str(root), backend=backend, batch_size=4, image_size=32, val_resize=36,
                val_crop=32, workers=1, color_jitter=0.0, lighting=0.0, prescan=False)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **kw})


def place(rank: int = 0, world: int = 1, seed: int = 0, cl: bool = False, dtype=torch.float32) -> Placement:
    """A CPU placement for cfg()'s batch of 4; loaders_for() fits it to another config's batches."""
    return Placement(rank, world, torch.device("cpu"), dtype, cl, seed, 4 // world, 4 // world)


def loaders_for(data, p: Placement, *args, **kw):
    """build_loaders with ``p`` holding this rank's share of data.batch_size and data.eval_batch_size, split
    by the rule the run plan uses (as a training run's placement holds them)."""
    batch, eval_batch = per_process(data, p.world_size)
    return build_loaders(data, replace(p, batch=batch, eval_batch=eval_batch), *args, **kw)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalized NCHW batch back to 0..255 RGB values (float)."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1) * 255
    return x.float() * std + mean


def ids(x: torch.Tensor) -> list[int]:
    """Image indices of an index_folder batch."""
    p = (pixels(x).mean(dim=(2, 3)) / 8).round().long()
    return (p[:, 0] + 32 * p[:, 1]).tolist()


def index_folder(root: Path, n_train: int, n_val: int, classes: int = 3, size=(48, 36)) -> Path:
    """Constant-color images: R/8 + 32 * G/8 is the image's index in its split (survives crops, flips and
    JPEG's color rounding, which moves values by a level or two)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (8 * (i % 32), 8 * (i // 32), 100)).save(d / f"{i:05d}.JPEG", quality=100)
    return root


def coordinate_image(w: int, h: int) -> Image.Image:
    """R encodes x, G encodes y (0..255 across the image), B is constant."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).round().astype(np.uint8))


def coordinate_folder(root: Path, n: int, size=(200, 150)) -> Path:
    """n coordinate images in one class, in train/ and val/."""
    for split in ("train", "val"):
        d = root / split / "c0"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            coordinate_image(*size).save(d / f"{i:04d}.JPEG", quality=100)
    return root


def crop_boxes(x: torch.Tensor, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(area fractions, aspect ratios w/h, mirrored flags) of the source boxes a batch of
    coordinate_image crops came from (the first and last column/row give the box's edges)."""
    s = x.shape[-1]
    areas, aspects, mirrored = [], [], []
    for img in pixels(x):
        xs = img[0].mean(0).numpy() / 255 * (w - 1)  # column -> source x
        ys = img[1].mean(1).numpy() / 255 * (h - 1)  # row -> source y
        cw = abs(xs[-1] - xs[0]) * s / (s - 1)  # centers of the first and last output pixels are s-1 apart
        ch = abs(ys[-1] - ys[0]) * s / (s - 1)
        areas.append(cw * ch / (w * h))
        aspects.append(cw / ch)
        mirrored.append(xs[-1] < xs[0])
    return np.array(areas), np.array(aspects), np.array(mirrored)


class PackedSource:
    """A second ImageSource, as a packed format would be one: all samples' bytes in one blob with an
    offset index, named ``pack.bin:<file>``. Built from a folder source, so it holds the same samples."""

    def __init__(self, folder, damage: dict | None = None) -> None:
        blobs = [Path(f).read_bytes() for f in folder.files]
        for i, fn in (damage or {}).items():
            blobs[i] = fn(blobs[i])
        self.blob, self.offsets = b"".join(blobs), np.cumsum([0] + [len(b) for b in blobs]).tolist()
        self.labels, self.classes, self.location = list(folder.labels), list(folder.classes), "pack.bin"
        self.names = [f"pack.bin:{Path(f).parent.name}/{Path(f).name}" for f in folder.files]

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> tuple[bytes, int]:
        return self.blob[self.offsets[index]:self.offsets[index + 1]], self.labels[index]

    def name(self, index: int) -> str:
        return self.names[index]


def textured_folder(root: Path, sizes: list[tuple[int, int]], span=(0, 255), seed: int = 0) -> Path:
    """One JPEG per (width, height) in train/c0 and val/c0, in that order: waves plus pixel noise, so every
    resampling and rounding difference shows (smooth images would hide them). Values fill ``span``; the
    full range saturates (many pixels at 0 and 255)."""
    rng = np.random.default_rng(seed)
    lo, hi = span
    for i, (w, h) in enumerate(sizes):
        x, y = np.linspace(0, 9, w)[None, :, None], np.linspace(0, 7, h)[:, None, None]
        img = 127 + 70 * np.sin(3 * x + 2 * y + np.arange(3)) + rng.normal(0, 30, (h, w, 3))
        img = (lo + img.clip(0, 255) * (hi - lo) / 255).round().astype(np.uint8)
        for split in ("train", "val"):
            d = root / split / "c0"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:03d}_{w}x{h}.JPEG", quality=90)
    return root


def photo_folder(root: Path, extra: Path) -> Path:
    """Textured images of two sizes (make_fake's), so crops, flips and colors all show in the pixels."""
    from resnext.data.tools import make_fake

    make_fake(root, 2, 6, 6, (120, 90))
    make_fake(extra, 1, 4, 1, (64, 96), seed=1)
    for f in extra.rglob("*.JPEG"):  # portrait images in class n00000000 too
        f.rename(root / f.relative_to(extra).parent / f"p_{f.name}")
    return root


def lua_ten_crop(img: torch.Tensor, size: int) -> list[torch.Tensor]:
    """fb.resnet.torch's TenCrop (datasets/transforms.lua) transcribed: for the image and its hflip, CenterCrop
    (w1 = ceil((w - size) / 2), h1 likewise) then image.crop's four corners; image.crop(x1, y1, x2, y2) takes
    columns x1..x2-1 and rows y1..y2-1."""
    h, w = img.shape[-2:]
    out = []
    for im in (img, img.flip(-1)):
        w1, h1 = math.ceil((w - size) / 2), math.ceil((h - size) / 2)
        out.append(im[:, h1:h1 + size, w1:w1 + size])
        out += [im[:, 0:size, 0:size], im[:, 0:size, w - size:w], im[:, h - size:h, 0:size], im[:, h - size:h, w - size:w]]
    return out


def huge_jpeg(data: bytes, side: int = 30_000) -> bytes:
    """A JPEG whose frame header (SOF) claims ``side`` x ``side`` pixels, the rest of it unchanged: what a
    decompression bomb looks like to every decoder before it allocates."""
    i = 2
    while i + 9 < len(data):
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            dims = side.to_bytes(2, "big") * 2
            return data[:i + 5] + dims + data[i + 9:]
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ValueError("no frame header")
