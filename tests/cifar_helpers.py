"""Write CIFAR data sets in the official python pickle format (for tests)."""

from __future__ import annotations

import pickle
import struct
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


def py2_pickle(obj) -> bytes:
    """``obj`` pickled as the official CIFAR files were (Python 2 cPickle, protocol 2, NumPy 1.x): str keys
    and names as Python 2 strings (SHORT_BINSTRING/BINSTRING), arrays rebuilt by
    numpy.core.multiarray._reconstruct. Handles dict, list, int, str/bytes and uint8/int64 arrays."""
    def s(b: bytes) -> bytes:  # a Python 2 str
        return (b"U" + struct.pack("<B", len(b)) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def dump(o) -> bytes:
        if isinstance(o, dict):
            return b"}(" + b"".join(dump(k) + dump(v) for k, v in o.items()) + b"u"
        if isinstance(o, list):
            return b"](" + b"".join(dump(v) for v in o) + b"e"
        if isinstance(o, bool | np.bool_):
            return b"\x88" if o else b"\x89"
        if isinstance(o, int | np.integer):
            return b"J" + struct.pack("<i", int(o))
        if isinstance(o, str | bytes):
            return s(o.encode() if isinstance(o, str) else o)
        if isinstance(o, tuple):
            return b"(" + b"".join(dump(v) for v in o) + b"t"
        if isinstance(o, np.ndarray):
            code = {np.dtype(np.uint8): b"u1", np.dtype("<i8"): b"i8"}[o.dtype]
            order = b"|" if o.dtype.itemsize == 1 else b"<"
            dtype = (b"cnumpy\ndtype\n" + s(code) + b"\x89\x88\x87R"
                     + dump((3, order.decode(), None, None, None, -1, -1, 0)) + b"b")
            state = b"(" + dump(1) + dump(tuple(o.shape)) + dtype + b"\x89" + s(np.ascontiguousarray(o).tobytes()) + b"tb"
            return b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + dump((0,)) + s(b"b") + b"\x87R" + state
        if o is None:
            return b"N"
        raise TypeError(type(o))

    return b"\x80\x02" + dump(obj) + b"."
