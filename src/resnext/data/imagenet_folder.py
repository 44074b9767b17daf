"""The JPEG folder ImageSource: scan root/{train,val}/<class>/ (or a file list), refuse unusable roots in one line."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
MEAN = (0.485, 0.456, 0.406)  # ImageNet RGB mean, in [0, 1] units
STD = (0.229, 0.224, 0.225)
# AlexNet PCA lighting (fb.resnet.torch): eigenvalues and eigenvectors (columns) of RGB covariance, [0, 1] units
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = ((-0.5675, 0.7192, 0.4009),
          (-0.5808, -0.0045, -0.8140),
          (-0.5836, -0.6948, 0.4203))


@dataclass(frozen=True)
class FolderSource:
    """An ImageSource (source.py) over image files: sample i is files[i] with label labels[i]."""

    files: list[str]  # absolute paths
    labels: list[int]  # class index per file
    classes: list[str]  # class folder names; index = position (sorted, torchvision's convention)
    location: str  # the split folder, or the file list the samples came from

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[bytes, int]:
        """The file's bytes and its label."""
        f = self.files[index]
        try:
            with open(f, "rb") as fh:
                return fh.read(), self.labels[index]
        except OSError as e:
            raise DataError(f"{f}: cannot be read ({e.strerror or type(e).__name__})") from None

    def name(self, index: int) -> str:
        return self.files[index]


def class_folders(split_dir: Path) -> tuple[list[str], list[str]]:
    """(the class folders of a split, sorted; a line for each hidden folder (".name") that holds images).
    A hidden folder is no class; .ipynb_checkpoints and the like, holding no images, are no concern."""
    entries = [e for e in os.scandir(split_dir) if e.is_dir()]
    hidden = [f"{e.path}: a hidden folder holding {n} image(s), skipped; rename it to use it as a class, or move "
              f"it out of {split_dir}" for e in entries if e.name.startswith(".") and (n := len(_images(Path(e.path))))]
    return sorted(e.name for e in entries if not e.name.startswith(".")), hidden


def _class_dirs(split_dir: Path) -> list[str]:
    """The class folders of a split; DataError where a hidden folder holds images (not dropped without a word)."""
    found, hidden = class_folders(split_dir)
    if hidden:
        raise DataError(hidden[0].replace(", skipped;", ", which training would skip;"))
    return found


def _images(folder: Path) -> list[str]:
    return sorted(str(folder / e.name) for e in os.scandir(folder)
                  if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def scan_split(root: Path, split: str, classes: list[str] | None = None) -> FolderSource:
    """Samples of root/split/<class>/*; with ``classes`` given (train's), val must have the same set."""
    d = root / split
    if not d.is_dir():
        raise DataError(f"{d}: missing; an ImageNet root needs {root}/train/<class>/*.JPEG and "
                        f"{root}/val/<class>/*.JPEG (ImageNet's own val: `python -m resnext.data prepare-val`; "
                        "or hold out part of train/: data.val_fraction=0.1)")
    found = _class_dirs(d)
    if not found:
        raise DataError(f"{d}: no class folders; expected one folder per class holding JPEG files")
    if classes is not None and found != classes:
        extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise DataError(f"{d}: classes differ from train/ (only in {split}: {extra[:3]}, missing: {missing[:3]})")
    files, labels = [], []
    for i, name in enumerate(found):
        imgs = _images(d / name)
        if not imgs:
            raise DataError(f"{d / name}: empty class folder; every class needs at least one image")
        files += imgs
        labels += [i] * len(imgs)
    return FolderSource(files, labels, found, str(d))


def read_file_list(root: Path, list_file: str, classes: list[str]) -> FolderSource:
    """Training samples from a list of "relative/path label" lines (paths relative to root)."""
    path = Path(list_file)
    if not path.is_file():
        raise DataError(f"{path}: data.file_list not found; expected lines 'relative/path.JPEG label'")
    files, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{n}: expected 'relative/path label', got {line.strip()!r}")
        label = int(parts[1])
        if not 0 <= label < len(classes):
            raise DataError(f"{path}:{n}: label {label} outside 0..{len(classes) - 1}")
        rel = os.path.normpath(parts[0])
        if os.path.isabs(rel) or rel == ".." or rel.startswith(".." + os.sep):
            raise DataError(f"{path}:{n}: {parts[0]!r} is outside data.root {root}; list paths relative to it")
        f = root / rel
        if not f.is_file():
            raise DataError(f"{f}: listed in {path}:{n} but missing")
        files.append(str(f))
        labels.append(label)
    if not files:
        raise DataError(f"{path}: data.file_list is empty")
    return FolderSource(files, labels, classes, str(path))


def held_out(source: FolderSource, root: Path, fraction: float) -> set[str]:
    """Files (relative to ``root``) to hold out of ``source`` for evaluation: in each class, the
    round(fraction x n) files (at least 1 of 2 or more) first in the order of a hash of their relative path,
    so the choice depends on the files' names only, not on the order they were listed in or the machine."""
    by_class: dict[int, list[str]] = {}
    for f, label in zip(source.files, source.labels, strict=True):
        by_class.setdefault(label, []).append(os.path.relpath(f, root))
    out: set[str] = set()
    for files in by_class.values():
        k = min(len(files) - 1, max(1, round(fraction * len(files)))) if len(files) > 1 else 0
        out |= set(sorted(files, key=lambda rel: hashlib.sha1(rel.encode()).hexdigest())[:k])
    return out


def split_off(source: FolderSource, root: Path, holdout: set[str]) -> tuple[FolderSource, FolderSource]:
    """(``source`` without the held-out files, the held-out files): training and evaluation samples."""
    rel = [os.path.relpath(f, root) for f in source.files]
    missing = holdout - set(rel)
    if missing:
        raise DataError(f"{root / 'train'}: {len(missing)} file(s) this run held out for evaluation are gone (e.g. "
                        f"{sorted(missing)[0]}); restore them, or start a new run (name=...)")
    def pick(held: bool, where: str) -> FolderSource:
        idx = [i for i, r in enumerate(rel) if (r in holdout) == held]
        return FolderSource([source.files[i] for i in idx], [source.labels[i] for i in idx], source.classes, where)

    return pick(False, source.location), pick(True, f"{source.location} (held out: data.val_fraction)")


def scan_root(root: str | None, file_list: str | None = None, val_fraction: float = 0.0,
              holdout: list[str] | None = None) -> tuple[FolderSource, FolderSource]:
    """Train and val samples of an ImageNet-layout root. Without val/, ``val_fraction`` of each class of
    train/ is held out for evaluation (``holdout``, the relative paths a run recorded, overrides the choice)."""
    if not root:
        raise DataError("data.root is not set; give the folder holding train/ and val/")
    r = Path(root).expanduser()
    if not r.is_dir():
        raise DataError(f"{r}: data.root does not exist; expected a folder holding train/ and val/")
    try:
        if val_fraction > 0:
            if (r / "val").is_dir():
                raise DataError(f"{r / 'val'} exists and data.val_fraction={val_fraction} would hold out part of "
                                "train/ instead; set data.val_fraction=0 to evaluate on val/")
            if file_list:
                raise DataError("data.val_fraction holds out part of the train/ scan; with data.file_list, give "
                                "a val/ folder instead")
            train = scan_split(r, "train")
            return split_off(train, r, set(holdout) if holdout is not None else held_out(train, r, val_fraction))
        train = scan_split(r, "train")
        val = scan_split(r, "val", train.classes)
        if file_list:
            train = read_file_list(r, file_list, train.classes)
    except OSError as e:  # an unreadable folder or list
        raise DataError(f"{e.filename}: cannot be read ({e.strerror}); the data root must be readable") from None
    return train, val

