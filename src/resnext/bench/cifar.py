"""`bench cifar`: the on-device CIFAR loader against torchvision's CIFAR10 + DataLoader, same pickles."""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

from ..data.base import Placement
from ..data.cifar import CIFAR_MEAN, CIFAR_STD, load_cifar
from ..data.memory import MemoryLoader
from .common import environment, interleaved, table


class Cifar10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 dataset (the reference), also on generated batches; module-level so that
    spawn-started DataLoader workers can pickle it."""

    def _check_integrity(self) -> bool:  # generated batches have the format, not the official checksums
        return True

    def _load_meta(self) -> None:  # class names are not needed for timing
        self.classes = [str(i) for i in range(10)]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help="folder holding cifar-10-batches-py/ (default: generate one)")
    p.add_argument("--images", type=int, default=10000, help="images to generate when no --root is given")
    p.add_argument("--batch", type=int, default=128, help="images per batch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the reference")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs (median reported)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")


def generate(root: Path, n: int) -> Path:
    """A CIFAR-10 python-format folder with n random training images (and a small test batch)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per = [n // 5 + (i < n % 5) for i in range(5)]
    for i, k in enumerate(per + [100]):
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (k, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, k).tolist()}, f)
    return root


def run(args) -> dict:
    from torchvision import transforms as T

    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    root = Path(args.root) if args.root else generate(Path(tempfile.mkdtemp(prefix="cifar-bench-")), args.images)
    x, y, _, _ = load_cifar(str(root), "cifar10")
    place = Placement(0, 1, device, torch.float32, device.type == "cuda", 0, args.batch, args.batch)
    ours = MemoryLoader(x, y, args.batch, place, CIFAR_MEAN, CIFAR_STD, train=True, pad=4, flip=True)
    epoch = [0]

    def run_ours() -> int:
        epoch[0] += 1
        ours.set_epoch(epoch[0])
        n = 0
        for xb, _ in ours:
            n += xb.shape[0]
        return n

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(CIFAR_MEAN, CIFAR_STD)])

    ds = Cifar10(str(root), train=True, transform=tf, download=False)
    ref = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True,
                                      num_workers=args.workers, persistent_workers=args.workers > 0,
                                      pin_memory=device.type == "cuda")

    def run_ref() -> int:
        n = 0
        for xb, _ in ref:
            xb = xb.to(device, non_blocking=True)
            n += xb.shape[0]
        return n

    res = interleaved({"ours (on-device)": run_ours, "torchvision reference": run_ref}, device, args.repeats)
    base = res["torchvision reference"]["images_per_s"]
    rows = [{"loader": k, "images_per_s": v["images_per_s"], "ratio": v["images_per_s"] / base}
            for k, v in res.items()]
    return {"rows": rows, "settings": vars(args) | {"environment": environment(device), "train_images": len(y)},
            "table": table(rows, [("loader", "loader", ""), ("images_per_s", "images/s", ".0f"),
                                  ("ratio", "vs reference", ".2f")])}
