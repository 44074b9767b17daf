"""ImageNet folder tools: make a fake data set, verify a root, and sort the flat val folder into classes."""

from __future__ import annotations

import os
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .imagenet_folder import IMAGE_EXTENSIONS, _class_dirs, class_folders
from .source import content_problem

VAL_NAME = "ILSVRC2012_val_{:08d}.JPEG"  # the official val file names, numbered from 1


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


def problem(path: Path) -> str | None:
    """Why an image file is unusable for training (named by its content, not its suffix), or None."""
    try:
        data = path.read_bytes()
    except OSError as e:  # unreadable: as much a finding as a broken stream
        return f"not decodable ({type(e).__name__})"
    return content_problem(data, path.name)


def _check(path: str) -> tuple[str, str | None]:
    return path, problem(Path(path))


def verify(root: Path, workers: int = 1) -> tuple[list[str], list[str]]:
    """(report lines, problem lines) for an ImageNet-layout root: images per class and split, files
    that are not decodable or not what their name says, empty classes, train/val class mismatch."""
    counts: dict[str, Counter] = {}
    problems, files, skipped = [], [], Counter()
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            problems.append(f"{d}: missing split folder")
            continue
        counts[split] = Counter()
        classes, hidden = class_folders(d)
        problems += hidden
        for c in classes:
            counts[split][c] = 0
            for e in os.scandir(d / c):
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS):
                    counts[split][c] += 1
                    files.append(e.path)
                elif e.is_file():  # not read by training: said here, not skipped silently
                    skipped[os.path.splitext(e.name)[1].lower() or "(no extension)"] += 1
            if counts[split][c] == 0:
                problems.append(f"{d / c}: empty class folder")
    files.sort()
    if workers > 1 and len(files) > 256:
        with get_context("fork").Pool(workers) as pool:
            checked = list(pool.imap(_check, files, chunksize=64))
    else:
        checked = [_check(f) for f in files]
    problems += [f"{f}: {why}" for f, why in checked if why]
    names = sorted(set().union(*counts.values())) if counts else []
    report = [f"{'class':<24} {'train':>7} {'val':>7}"]
    report += [f"{c:<24} {counts.get('train', {}).get(c, '-'):>7} {counts.get('val', {}).get(c, '-'):>7}" for c in names]
    for split, n in counts.items():
        per = n.values()
        report.append(f"{split}: {sum(per)} images in {len(n)} classes ({min(per, default=0)}..{max(per, default=0)} "
                      "per class)")
    if skipped:
        report.append("not images, skipped by training (only " + ", ".join(IMAGE_EXTENSIONS) + " are read): "
                      + ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items())))
    for split, n in counts.items():
        if len(n) == 1:
            problems.append(f"{root / split}: one class folder; a classifier needs at least 2 classes")
    if len(counts) == 2 and set(counts["train"]) != set(counts["val"]):
        only_t = sorted(set(counts["train"]) - set(counts["val"]))
        only_v = sorted(set(counts["val"]) - set(counts["train"]))
        problems.append(f"{root}: class mismatch: only in train {only_t[:5]}, only in val {only_v[:5]}")
    return report, problems


def _rows(labels_file: Path) -> list[tuple[int, str | None, str]]:
    """(line number, file name or None, label) per line of a ground-truth file in any accepted form."""
    rows = []
    for n, line in enumerate(labels_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:  # LOC_val_solution.csv: "ImageId,PredictionString" then "NAME,SYNSET x y x y ..."
            name, rest = (p.strip() for p in line.split(",", 1))
            if name == "ImageId":
                continue
            rows.append((n, name, rest.split()[0] if rest.split() else ""))
            continue
        tok = line.split()
        if tok[0] == "mkdir":  # valprep.sh: "mkdir -p SYNSET" lines, then "mv NAME SYNSET/"
            continue
        if tok[0] == "mv" and len(tok) == 3:
            rows.append((n, tok[1], tok[2].rstrip("/")))
        elif len(tok) in (1, 2):
            rows.append((n, tok[0] if len(tok) == 2 else None, tok[-1]))
        else:
            raise DataError(f"{labels_file}:{n}: expected 'FILE SYNSET' or one label, got {line!r}")
    return rows


def read_labels(labels_file: Path, classes_from: Path | None = None) -> dict[str, str]:
    """Val file name -> class folder. Accepted: "FILE SYNSET" lines (FILE with or without .JPEG),
    LOC_val_solution.csv, valprep.sh's mv lines, or one label per line for ILSVRC2012_val_00000001.JPEG
    onwards: a synset, or a 0-based index into the sorted class folders of --classes-from (not the
    devkit's 1-based ILSVRC2012_ID, whose order is not the folders' order)."""
    rows = _rows(labels_file)
    if not rows:
        raise DataError(f"{labels_file}: no labels found; expected 'FILE SYNSET' lines or one label per line")
    if len({name is None for _, name, _ in rows}) > 1:
        raise DataError(f"{labels_file}: mixes lines with and without file names; use one form")
    names = _class_dirs(classes_from) if classes_from else None
    if classes_from and not names:
        raise DataError(f"{classes_from}: no class folders; --classes-from needs the train/ folder")
    numeric = [int(lab) for _, _, lab in rows if lab.isdigit()]
    if numeric and names is None:
        raise DataError(f"{labels_file}: numeric labels need --classes-from TRAIN_DIR to name the classes")
    if numeric and min(numeric) >= 1 and max(numeric) == len(names):
        raise DataError(f"{labels_file}: labels run 1..{len(names)}, like the devkit's ILSVRC2012_IDs, which do "
                        "not follow the sorted folder order; give 'FILE SYNSET' lines or 0-based indices")
    mapping = {}
    for k, (n, name, lab) in enumerate(rows, 1):
        if lab.isdigit():
            if int(lab) >= len(names):
                raise DataError(f"{labels_file}:{n}: label {lab} outside 0..{len(names) - 1} ({classes_from})")
            lab = names[int(lab)]
        elif not lab or lab in (".", "..") or "/" in lab or "\\" in lab or lab.startswith("."):
            raise DataError(f"{labels_file}:{n}: {lab!r} is not a class folder name")
        elif names is not None and lab not in names:
            raise DataError(f"{labels_file}:{n}: class {lab} is not a folder of {classes_from}")
        file = VAL_NAME.format(k) if name is None else Path(name).name
        mapping[file if Path(file).suffix else file + ".JPEG"] = lab
    return mapping


def prepare_val(val_dir: Path, labels_file: Path, classes_from: Path | None = None) -> int:
    """Move flat val images into val/<class>/; checks everything first; a second run moves nothing."""
    if not val_dir.is_dir():
        raise DataError(f"{val_dir}: not a folder; expected the flat ImageNet val folder")
    if not labels_file.is_file():
        raise DataError(f"{labels_file}: label file not found")
    mapping = read_labels(labels_file, classes_from)
    flat = sorted(e.name for e in os.scandir(val_dir) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
    unknown = [f for f in flat if f not in mapping]
    if unknown:
        raise DataError(f"{val_dir / unknown[0]}: not in {labels_file} ({len(unknown)} such files); nothing moved")
    for f in flat:  # every destination must be free before the first move
        dest = val_dir / mapping[f] / f
        if dest.exists() or (val_dir / mapping[f]).is_file():
            raise DataError(f"{dest}: already exists; nothing moved")
    for f in flat:
        (val_dir / mapping[f]).mkdir(exist_ok=True)
        os.replace(val_dir / f, val_dir / mapping[f] / f)
    return len(flat)
