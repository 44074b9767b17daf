"""Write CIFAR data sets in the official python pickle format (for tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, n_train: int = 100, n_test: int = 37, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with 5 training batches and a test batch; images encode their label."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, :1024] = (labels[:, None] * 25).astype(np.uint8)  # red plane tells the class
        return {"data": data, "labels": labels.tolist(), "batch_label": "x"}

    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    for i, n in enumerate(sizes, 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    return root


def write_cifar100(root: Path, n_train: int = 60, n_test: int = 21, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": rng.integers(0, 100, n).tolist(),
                         "coarse_labels": rng.integers(0, 20, n).tolist()}, f)
    return root
