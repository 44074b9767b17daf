"""Data pickles (CIFAR batches, batches.meta) load as the official files need, and never run code they carry."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
from cifar_helpers import py2_pickle, write_cifar10
from inference_helpers import TINY_MODEL, make_run, tool, write_cifar10_meta, write_images
from runs import train

from resnext.data import DataError
from resnext.data.cifar import load_cifar
from resnext.data.pickles import read_pickle


class Payload:
    """What an attacker plants: unpickling it calls os.mkdir(marker) (any callable would do)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def refused(path) -> str:
    return rf"^{re.escape(str(path))}: refused, it holds objects a CIFAR batch does not \(GLOBAL posix\.mkdir\)$"


def plant(batch, marker) -> None:
    """Add a Payload to the pickled dict in file ``batch`` (keeps the real arrays and labels)."""
    d = pickle.loads(batch.read_bytes(), encoding="bytes")
    d["extra"] = Payload(marker)
    batch.write_bytes(pickle.dumps(d, protocol=2))


def test_the_payload_is_live(tmp_path):
    """The control: a plain pickle.load of the planted file runs it (so the refusals below mean something)."""
    write_cifar10(tmp_path, 10, 3)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    plant(batch, tmp_path / "marker")
    pickle.loads(batch.read_bytes())
    assert (tmp_path / "marker").is_dir()


def test_official_python2_batches_and_meta_load(tmp_path):
    """Python 2 cPickle files (what the official archive holds): bytes keys and strings, NumPy 1.x arrays."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    want = []
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data, labels = rng.integers(0, 256, (3, 3072), dtype=np.uint8), [i, 9 - i, 5]
        want.append((data, labels))
        (folder / name).write_bytes(py2_pickle({"batch_label": f"batch {i}", "labels": labels, "data": data,
                                                "filenames": [f"img_{i}_{k}.png" for k in range(3)]}))
    xtr, ytr, xte, yte = load_cifar(str(tmp_path), "cifar10")
    assert np.array_equal(xtr.numpy().reshape(15, 3072), np.concatenate([d for d, _ in want[:5]]))
    assert ytr.tolist() == [lab for _, labels in want[:5] for lab in labels] and yte.tolist() == want[5][1]
    assert np.array_equal(xte.numpy().reshape(3, 3072), want[5][0])
    meta = folder / "batches.meta"
    meta.write_bytes(py2_pickle({"label_names": ["airplane", "automobile"], "num_cases_per_batch": 10000,
                                 "num_vis": 3072}))
    assert read_pickle(meta) == {b"label_names": [b"airplane", b"automobile"], b"num_cases_per_batch": 10000,
                                 b"num_vis": 3072}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_python3_written_pickles_load(tmp_path, protocol):
    """Batches written by Python 3 (str keys; bytes become _codecs.encode(..., 'latin1') below protocol 3;
    arrays use NumPy 2's module names, and _frombuffer at protocol 5)."""
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    (tmp_path / "b").write_bytes(pickle.dumps({"data": data, "labels": [1, 2], "names": [b"cat", b"\xff"]},
                                              protocol=protocol))
    got = read_pickle(tmp_path / "b")
    assert np.array_equal(got["data"], data) and got["labels"] == [1, 2] and got["names"] == [b"cat", b"\xff"]


def test_a_codec_other_than_latin1_is_not_a_bytes_literal(tmp_path):
    import codecs

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("abc", "rot13")

    (tmp_path / "b").write_bytes(pickle.dumps({"x": Rot13()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="is not a bytes literal"):
        read_pickle(tmp_path / "b")


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch"])
def test_a_batch_that_would_run_code_is_refused(tmp_path, name):
    write_cifar10(tmp_path, 10, 3)
    batch = tmp_path / "cifar-10-batches-py" / name
    plant(batch, tmp_path / "marker")
    with pytest.raises(DataError, match=refused(batch)):
        load_cifar(str(tmp_path), "cifar10")
    assert not (tmp_path / "marker").exists()


def test_train_refuses_a_planted_batch_in_one_line(tmp_path):
    write_cifar10(tmp_path / "cifar", 64, 16)
    batch = tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_2"
    plant(batch, tmp_path / "marker")
    r = train(tmp_path / "run", "data.dataset=cifar10", f"data.root={tmp_path / 'cifar'}", "trainer.epochs=1")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {batch}: refused, it holds objects"), r.stderr
    assert "posix.mkdir" in lines[0] and not (tmp_path / "marker").exists()


def test_predict_refuses_a_planted_meta_in_one_line(tmp_path):
    write_cifar10_meta(tmp_path / "cifar")
    meta = tmp_path / "cifar" / "cifar-10-batches-py" / "batches.meta"
    assert read_pickle(meta)[b"label_names"][0] == b"airplane"  # the helper's file (protocol 2, bytes) loads
    plant(meta, tmp_path / "marker")
    make_run(tmp_path / "run", *TINY_MODEL, "data=cifar10", f"data.root={tmp_path / 'cifar'}")
    image = write_images(tmp_path / "images")[0]
    r = tool("predict", tmp_path / "run", image)
    assert r.returncode == 2 and r.stdout == "", r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [f"error: {meta}: refused, it holds objects a CIFAR batch does not "
                                             "(GLOBAL posix.mkdir)"]
    assert not (tmp_path / "marker").exists()
