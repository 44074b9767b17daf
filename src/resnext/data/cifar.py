"""CIFAR-10/100 (official python pickle batches) and scikit-learn digits, served from device memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import Loaders, Placement
from .memory import MemoryLoader
from .pickles import read_pickle

# Per-channel RGB statistics of each training set, [0, 1] units: the official ResNeXt code's values
# (datasets/cifar10.lua, datasets/cifar100.lua: means 125.3, 123.0, 113.9 and 129.3, 124.1, 112.4, stds 63.0,
# 62.1, 66.7 and 68.2, 65.4, 70.4 on the 0-255 scale, computed over the whole training set).
CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
CIFAR100_MEAN = tuple(v / 255 for v in (129.3, 124.1, 112.4))
CIFAR100_STD = tuple(v / 255 for v in (68.2, 65.4, 70.4))
#: data.dataset -> (mean, std) of its images
STATS = {"cifar10": (CIFAR_MEAN, CIFAR_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.25, 0.25, 0.25)

# dataset -> (folder inside root, training files, test files, label key)
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def _folder(root: Path, dataset: str) -> Path:
    sub, train_files, _, _ = LAYOUT[dataset]
    for cand in (root / sub, root):
        if cand.is_dir() and all((cand / f).is_file() for f in train_files):
            return cand
    expected = ", ".join(train_files + LAYOUT[dataset][2])
    raise DataError(f"data.root={root}: no {dataset} python batches found; expected {sub}/ holding {expected} "
                    f"(the official 'python version' archive, extracted)")


def _read(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = read_pickle(path)  # refuses (DataError) a file that would run code
        # the official batches (Python 2 pickles) load with bytes keys; batches written by Python 3 have str keys
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except DataError:
        raise
    except Exception as e:  # any malformed file is a user error about that path
        raise DataError(f"{path}: not a readable CIFAR python batch ({type(e).__name__}: {e})") from None
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def load_cifar(root: str, dataset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 train/test images (N, 3, 32, 32) and int64 labels from the official pickle batches."""
    folder = _folder(Path(root).expanduser(), dataset)
    _, train_files, test_files, key = LAYOUT[dataset]
    out = []
    for files in (train_files, test_files):
        parts = []
        for f in files:
            if not (folder / f).is_file():
                raise DataError(f"{folder / f}: missing; {dataset} needs {', '.join(train_files + test_files)}")
            parts.append(_read(folder / f, key))
        out += [torch.from_numpy(np.concatenate([p[0] for p in parts])),
                torch.from_numpy(np.concatenate([p[1] for p in parts]))]
    return out[0], out[1], out[2], out[3]


#: The names file of each CIFAR set and the key of its class names (the official python batches).
META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}


def cifar_class_names(root: Path, dataset: str) -> list[str] | None:
    """The class names of the official batches' meta file, or None where it is absent or unreadable
    (a file that would run code is refused: DataError)."""
    meta_file, key = META[dataset]
    for folder in (root / LAYOUT[dataset][0], root):
        if (folder / meta_file).is_file():
            try:
                meta = read_pickle(folder / meta_file)
                names = meta.get(key.encode(), meta.get(key))
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            except DataError:
                raise
            except Exception:  # a names file we cannot read only costs the names
                return None
    return None


def digits_arrays():
    """(images (1797, 8, 8) float64 in 0..16, labels int64): scikit-learn's load_digits, read from the file it
    ships (datasets/data/digits.csv.gz: 64 pixels and the label per row) without importing scikit-learn,
    which costs 0.65 s of every digits start."""
    import gzip
    import importlib.util


    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.dataset=digits needs scikit-learn (its digits file): pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def load_digits(size: int = 32, test_fraction: float = 0.2):
    """scikit-learn's 1,797 handwritten digits as uint8 RGB size x size images, split deterministically."""
    images, target = digits_arrays()
    x = torch.from_numpy(images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def build_memory(cfg, place: Placement) -> Loaders:
    """Loaders for cifar10, cifar100 or digits, the whole set on the training device."""
    if cfg.dataset == "digits":
        xtr, ytr, xte, yte = load_digits(cfg.image_size)
        mean, std, classes, names = DIGITS_MEAN, DIGITS_STD, 10, [str(i) for i in range(10)]
    else:
        xtr, ytr, xte, yte = load_cifar(cfg.root, cfg.dataset)
        (mean, std), classes = STATS[cfg.dataset], 10 if cfg.dataset == "cifar10" else 100
        names = cifar_class_names(Path(str(cfg.root)).expanduser(), cfg.dataset)
    batch, eval_batch = place.batch, place.eval_batch  # the plan's split of the global batches
    train = MemoryLoader(xtr, ytr, batch, place, mean, std, True, cfg.pad, cfg.flip)
    if len(train) == 0:
        raise DataError(f"data.batch_size={cfg.batch_size} is larger than the {len(ytr)} training samples")
    val = MemoryLoader(xte, yte, eval_batch, place, mean, std, False, crops=cfg.eval_crops, crop=cfg.val_crop)
    return Loaders(train, val, classes, len(ytr), len(yte), names if names and len(names) == classes else None)
