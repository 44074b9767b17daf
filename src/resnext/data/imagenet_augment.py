"""ImageNet training augmentation drawn per sample from (seed, epoch, position): the same for every backend."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image

from ..errors import DataError
from .imagenet_folder import EIGVAL, EIGVEC

#: data.interpolation: the resize filter of training crops and evaluation images
INTERPOLATIONS = ("bilinear", "bicubic")


def interpolation(cfg) -> str:
    """``cfg.interpolation`` (any case) as one of INTERPOLATIONS; DataError otherwise."""
    name = str(getattr(cfg, "interpolation", "bilinear")).lower()
    if name not in INTERPOLATIONS:
        raise DataError(f"data.interpolation={cfg.interpolation!r} is not a resize filter; choose "
                        f"{' or '.join(INTERPOLATIONS)}")
    return name

# Every sample's crop, flip, jitter and lighting come from its own generator, seeded by the run seed,
# the epoch and the sample's position in the epoch's permutation. Nothing depends on the rank, the
# world size, the worker or thread count or where an epoch was (re)started, so a run resumed at any
# step sees the very batches the uninterrupted run saw, and DALI and torchvision draw the same boxes.
_MASK = (1 << 64) - 1
ATTEMPTS = 10  # tries at a random box before the central fallback (torchvision and fb.resnet.torch)


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 64-bit seed for the sample at ``position`` of epoch ``epoch``'s permutation."""
    return _splitmix(_splitmix(_splitmix(seed & _MASK) ^ (epoch & _MASK)) ^ (position & _MASK))


@dataclass(frozen=True)
class AugConfig:
    """The data config keys augmentation reads, as plain values (cheap to read per sample, picklable)."""

    min_area: float  # smallest crop area fraction
    min_aspect: float  # smallest crop aspect ratio w/h (the largest is its inverse)
    flip: bool  # random horizontal mirror
    color_jitter: float  # brightness/contrast/saturation factors drawn from [1 - j, 1 + j]
    lighting: float  # std of the PCA lighting coefficients

    @classmethod
    def of(cls, cfg) -> AugConfig:
        """From the data config subtree (anything with these attributes)."""
        return cls(float(cfg.min_area), float(cfg.min_aspect), bool(getattr(cfg, "flip", True)),
                   float(cfg.color_jitter), float(cfg.lighting))


@dataclass(frozen=True)
class Aug:
    """One training sample's augmentation: crop box in source pixels, mirror, jitter factors, lighting."""

    x: int  # left of the crop box
    y: int  # top of the crop box
    w: int  # width of the crop box
    h: int  # height of the crop box
    flip: bool  # mirror horizontally
    brightness: float  # jitter factors (1 = unchanged), applied in this order
    contrast: float
    saturation: float
    shift: tuple[float, float, float]  # PCA lighting: RGB offset in [0, 1] units, added before normalizing


def crop_box(rng: random.Random, width: int, height: int, min_area: float, min_aspect: float) -> tuple[int, ...]:
    """(x, y, w, h): area fraction in [min_area, 1], aspect (w/h) log-uniform in [min_aspect, 1/min_aspect];
    after ATTEMPTS misses, the largest central box whose aspect is in range (as torchvision does)."""
    lo, hi = math.log(min_aspect), math.log(1 / min_aspect)
    area = width * height
    for _ in range(ATTEMPTS):
        target = area * rng.uniform(min_area, 1.0)
        aspect = math.exp(rng.uniform(lo, hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    ratio = width / height
    if ratio < min_aspect:
        w, h = width, round(width / min_aspect)
    elif ratio > 1 / min_aspect:
        w, h = round(height / min_aspect), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def draw(seed: int, width: int, height: int, cfg: AugConfig) -> Aug:
    """The augmentation for a sample with generator seed ``seed`` (see sample_seed) and this image size.

    Every draw happens whatever the config, so switching jitter or lighting off leaves the crops and
    flips unchanged."""
    rng = random.Random(seed)
    x, y, w, h = crop_box(rng, width, height, cfg.min_area, cfg.min_aspect)
    flip = rng.random() < 0.5 and cfg.flip
    j = cfg.color_jitter
    b, c, s = (rng.uniform(1 - j, 1 + j) for _ in range(3))
    alpha = [rng.gauss(0.0, 1.0) * cfg.lighting * EIGVAL[k] for k in range(3)]
    shift = tuple(sum(EIGVEC[ch][k] * alpha[k] for k in range(3)) for ch in range(3))
    return Aug(x, y, w, h, flip, b, c, s, shift)


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn marker), or None."""
    i, n = 2, len(head)
    while i + 9 < n:
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (head[i + 7] << 8) | head[i + 8], (head[i + 5] << 8) | head[i + 6]
        i += 2 + ((head[i + 2] << 8) | head[i + 3])
    return None


#: Pixels an image may have: PIL's decompression-bomb limit (twice Image.MAX_IMAGE_PIXELS, 13,377^2), for
#: every decoder (DALI's too), so a crafted or runaway file is one named bad file, not a machine out of memory.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


def image_size(data) -> tuple[int, int]:
    """(width, height) of an encoded image (bytes or a uint8 array): JPEG headers read directly, any
    other format through PIL. Raises ValueError when the data is not an image, or one of more than
    MAX_PIXELS pixels."""
    head = bytes(data[:65536])
    size = _jpeg_size(head) if head[:2] == b"\xff\xd8" else None
    if not (size and size[0] > 0 and size[1] > 0):
        try:
            with Image.open(io.BytesIO(memoryview(data))) as im:
                size = im.size
        except Image.DecompressionBombError as e:
            raise ValueError(f"too large an image to decode ({e})") from None
        except Exception as e:  # PIL raises many types for bad data
            raise ValueError(f"not an image ({type(e).__name__})") from None
    if size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"too large an image to decode ({size[0]}x{size[1]} pixels, more than the "
                         f"{MAX_PIXELS:,} PIL allows: a decompression bomb?)")
    return size
