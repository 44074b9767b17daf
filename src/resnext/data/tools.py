"""ImageNet folder tools: make a fake data set, verify a root, and sort the flat val folder into classes."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DataError
from .imagenet_folder import IMAGE_EXTENSIONS, _class_dirs


def make_fake(root: Path, classes: int, per_class: int, val_per_class: int, size: tuple[int, int],
              seed: int = 0) -> int:
    """Write root/{train,val}/nXXXXXXXX/*.JPEG: smooth random images, a distinct mean color per class."""
    rng = np.random.default_rng(seed)
    w, h = size
    written = 0
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            base = rng.integers(40, 216, 3)
            for i in range(count):
                small = rng.integers(-40, 40, (max(h // 16, 2), max(w // 16, 2), 3))
                noise = np.asarray(Image.fromarray((small + 128).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                                   dtype=np.int16) - 128
                img = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{split}_{c}_{i:05d}.JPEG", quality=90)
                written += 1
    return written


def _problem(path: Path) -> str | None:
    """Why an image file is unusable for training, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(b"\x89PNG"):
            return "PNG data in a .JPEG file" if path.suffix.lower() in (".jpeg", ".jpg") else None
        if not head.startswith(b"\xff\xd8"):
            return "not a JPEG file"
        with Image.open(path) as im:
            mode = im.mode
            im.load()
        if mode == "CMYK":
            return "CMYK JPEG (decoders expect RGB or grayscale)"
    except Exception as e:  # any decoding failure is a finding, not a crash
        return f"not decodable ({type(e).__name__})"
    return None


def verify(root: Path) -> tuple[list[str], list[str]]:
    """(report lines, problem lines) for an ImageNet-layout root."""
    report, problems = [], []
    splits = {}
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            problems.append(f"{d}: missing split folder")
            continue
        classes = _class_dirs(d)
        counts = Counter()
        for c in classes:
            for e in os.scandir(d / c):
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS):
                    counts[c] += 1
                    why = _problem(Path(e.path))
                    if why:
                        problems.append(f"{e.path}: {why}")
            if counts[c] == 0:
                problems.append(f"{d / c}: empty class folder")
        splits[split] = classes
        n = sum(counts.values())
        lo = min(counts.values(), default=0)
        hi = max(counts.values(), default=0)
        report.append(f"{split}: {n} images in {len(classes)} classes ({lo}..{hi} per class)")
    if len(splits) == 2 and splits["train"] != splits["val"]:
        only_t = sorted(set(splits["train"]) - set(splits["val"]))
        only_v = sorted(set(splits["val"]) - set(splits["train"]))
        problems.append(f"{root}: class mismatch: only in train {only_t[:5]}, only in val {only_v[:5]}")
    return report, problems


def _read_labels(labels_file: Path, classes_from: Path | None) -> dict[str, str]:
    """file name -> class folder, from "name synset" lines or one label per line (index or synset)."""
    lines = [ln.split() for ln in labels_file.read_text().splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{labels_file}: empty label file")
    if all(len(p) >= 2 for p in lines):  # "ILSVRC2012_val_00000001.JPEG n01751748" (or a CSV-like header-less list)
        return {Path(p[0]).name if "." in p[0] else p[0] + ".JPEG": p[1].split(",")[0] for p in lines}
    names = sorted(_class_dirs(classes_from)) if classes_from else None
    mapping = {}
    for i, p in enumerate(lines, 1):
        label = p[0]
        if label.isdigit():
            if names is None:
                raise DataError(f"{labels_file}: numeric labels need --classes-from TRAIN_DIR to name the classes")
            k = int(label) - (1 if min(int(q[0]) for q in lines) == 1 else 0)  # the devkit counts from 1
            if not 0 <= k < len(names):
                raise DataError(f"{labels_file}:{i}: label {label} outside the {len(names)} classes")
            label = names[k]
        mapping[f"ILSVRC2012_val_{i:08d}.JPEG"] = label
    return mapping


def prepare_val(val_dir: Path, labels_file: Path, classes_from: Path | None = None) -> int:
    """Move flat val images into val/<class>/; checks everything first; a second run moves nothing."""
    if not val_dir.is_dir():
        raise DataError(f"{val_dir}: not a folder; expected the flat ImageNet val folder")
    if not labels_file.is_file():
        raise DataError(f"{labels_file}: label file not found")
    mapping = _read_labels(labels_file, classes_from)
    flat = sorted(e.name for e in os.scandir(val_dir) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
    unknown = [f for f in flat if f not in mapping]
    if unknown:
        raise DataError(f"{val_dir / unknown[0]}: not in {labels_file} ({len(unknown)} such files); nothing moved")
    for f in flat:  # all destinations must be free before the first move
        dest = val_dir / mapping[f] / f
        if dest.exists():
            raise DataError(f"{dest}: already exists; nothing moved")
    for f in flat:
        (val_dir / mapping[f]).mkdir(exist_ok=True)
        os.replace(val_dir / f, val_dir / mapping[f] / f)
    return len(flat)
