"""In-memory sources (CIFAR pickles, digits): exact sharding, epoch order, crops and flips, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from cifar_helpers import write_cifar10, write_cifar100
from imagenet_data_helpers import loaders_for
from omegaconf import OmegaConf

from resnext.config import DataConfig
from resnext.data import DataError, Placement
from resnext.data.cifar import load_cifar, load_digits
from resnext.data.memory import MemoryLoader


def place(rank=0, world=1, seed=0, channels_last=False):
    """A CPU placement; the loaders here are given their batch, loaders_for() fits it to a config's."""
    return Placement(rank, world, torch.device("cpu"), torch.float32, channels_last, seed, 4, 4)


def data_cfg(**kw):
    cfg = OmegaConf.structured(DataConfig)
    cfg.merge_with(kw)
    return cfg


def ids_loader(n, batch, p, train=True, pad=0, flip=False):
    """Images whose pixel values encode the sample index (so an output tells which sample it is)."""
    imgs = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return MemoryLoader(imgs, torch.arange(n), batch, p, (0, 0, 0), (1 / 255,) * 3, train, pad, flip)


def test_cifar10_and_100_pickles_load(tmp_path):
    write_cifar10(tmp_path, 50, 13)
    xtr, ytr, xte, yte = load_cifar(str(tmp_path), "cifar10")
    assert xtr.shape == (50, 3, 32, 32) and xte.shape == (13, 3, 32, 32) and xtr.dtype == torch.uint8
    assert torch.equal(xtr[:, 0, 0, 0].long(), ytr * 25)
    write_cifar100(tmp_path, 20, 7)
    x, y, xt, yt = load_cifar(str(tmp_path / "cifar-100-python"), "cifar100")  # folder itself works too
    assert len(y) == 20 and len(yt) == 7


def test_official_python2_style_bytes_keys_load(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:  # the keys the official (Python 2) files load with
            pickle.dump({b"data": np.full((2, 3072), 7, np.uint8), b"labels": [3, 4]}, f)
    xtr, ytr, _, yte = load_cifar(str(tmp_path), "cifar10")
    assert xtr.shape == (10, 3, 32, 32) and int(xtr.max()) == 7 and ytr.tolist() == [3, 4] * 5 and len(yte) == 2


def test_missing_or_malformed_cifar_root_is_one_line(tmp_path):
    with pytest.raises(DataError, match="data_batch_1.*test_batch") as e:
        load_cifar(str(tmp_path), "cifar10")
    assert "\n" not in str(e.value)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR python batch"):
        load_cifar(str(tmp_path), "cifar10")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_epoch_visits_each_sample_once_over_ranks(world):
    n, batch = 50, 4
    seen = []
    for r in range(world):
        ld = ids_loader(n, batch, place(r, world))
        ld.set_epoch(3)
        for x, y in ld:
            assert torch.equal(x[:, 0, 0, 0].long(), y)  # image and label travel together
            seen += y.tolist()
        assert len(ld) == n // (batch * world) and ld.num_samples == len(ld) * batch
    assert len(seen) == len(set(seen)) == (n // (batch * world)) * batch * world


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_counts_each_sample_exactly_once(world):
    n = 37
    seen = []
    for r in range(world):
        ld = ids_loader(n, 5, place(r, world), train=False)
        got = [y for _, ys in ld for y in ys.tolist()]
        assert len(got) == ld.num_samples
        seen += got
    assert sorted(seen) == list(range(n))


def test_order_new_each_epoch_same_for_same_seed_and_resumable():
    def order(seed, epoch, start=0):
        ld = ids_loader(40, 4, place(seed=seed))
        ld.set_epoch(epoch, start)
        return [y for _, ys in ld for y in ys.tolist()]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)
    assert order(0, 1, start=3) == order(0, 1)[12:]


def test_crop_and_flip_are_the_paper_augmentation_and_resumable():
    # a 32x32 image whose pixel (y, x) holds x in channel 0 and y in channel 1
    n, size, pad = 64, 8, 4
    xs = torch.arange(size).view(1, size).expand(size, size)
    img = torch.stack([xs + 10, xs.t() + 10, torch.zeros(size, size, dtype=torch.long)]).to(torch.uint8)
    imgs = img.unsqueeze(0).expand(n, -1, -1, -1).contiguous()
    ld = MemoryLoader(imgs, torch.zeros(n, dtype=torch.long), n, place(), (0, 0, 0), (1 / 255,) * 3,
                      True, pad, True)
    ld.set_epoch(0)
    x, _ = next(iter(ld))
    offsets, mirrored = set(), 0
    for im in x.round().long():
        col, row = im[0], im[1]
        inside = col > 0  # zero padding carries 0; real pixels carry >= 10
        first = (col[inside].view(-1)[0] - 10).item()
        rowv = row[inside]
        # within a row, columns step by +1 (plain) or -1 (mirrored)
        r0 = col[inside.any(1)][0]
        r0 = r0[r0 > 0]
        step = (r0[1] - r0[0]).item() if len(r0) > 1 else 1
        mirrored += step == -1
        assert rowv.min() >= 10 and rowv.max() <= 10 + size - 1
        offsets.add(first)
        assert x.shape[-2:] == (size, size)
    assert 16 <= mirrored <= 48  # about half of 64
    assert len(offsets) > 3  # crops move
    ld2 = MemoryLoader(imgs, torch.zeros(n, dtype=torch.long), n, place(), (0, 0, 0), (1 / 255,) * 3, True, pad, True)
    ld2.set_epoch(0)
    assert torch.equal(next(iter(ld2))[0], x)  # the same (seed, epoch, step) gives the same batch


def test_channels_last_and_dtype_delivery():
    ld = ids_loader(8, 4, Placement(0, 1, torch.device("cpu"), torch.bfloat16, True, 0, 4, 4), pad=1, flip=True)
    x, y = next(iter(ld))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == torch.int64


def test_build_loaders_digits_real_data():
    ld = loaders_for(data_cfg(dataset="digits", batch_size=64, image_size=32, flip=False), place(0, 2))
    assert (ld.train_size, ld.val_size, ld.num_classes) == (1438, 359, 10)
    x, y = next(iter(ld.train))
    assert x.shape == (32, 3, 32, 32) and y.max() < 10
    xtr, ytr, xte, yte = load_digits()
    assert not set(map(tuple, xte.flatten(1)[:50].tolist())) & set(map(tuple, xtr.flatten(1)[:2000].tolist()))


def test_batch_larger_than_set_is_a_data_error(tmp_path):
    write_cifar10(tmp_path, 20, 5)
    with pytest.raises(DataError, match="larger than the 20 training samples"):
        loaders_for(data_cfg(dataset="cifar10", root=str(tmp_path), batch_size=64), place())


@pytest.mark.parametrize("content", ["constant", "random"])
def test_padding_is_the_mean_colour_as_the_official_code(content):
    """fb.resnet.torch/ResNeXt normalize first, then zero-pad for the random crop: the border is 0 after
    normalisation (the mean colour), the rest is the normalized image, shifted and mirrored by the draws
    of (seed, epoch, step), unchanged from when the raw image was padded with black."""
    from resnext.data.cifar import CIFAR_MEAN, CIFAR_STD
    from resnext.data.memory import batch_seed

    n, size, pad, p = 16, 8, 3, place(seed=5)
    gen = torch.Generator().manual_seed(0)
    imgs = (torch.full((n, 3, size, size), 255, dtype=torch.uint8) if content == "constant"
            else torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen))
    imgs[imgs == 123] = 124  # 123.0 is CIFAR-10's green mean (the official code's): it would normalise to 0
    ld = MemoryLoader(imgs, torch.arange(n), n, p, CIFAR_MEAN, CIFAR_STD, True, pad, True)
    ld.set_epoch(2)
    x, y = next(iter(ld))
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255
    norm = (imgs[y].float() - mean) * (1 / (torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255))
    g = torch.Generator().manual_seed(batch_seed(5, 2, 0))  # the loader's draws for this batch
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    mirror = torch.rand(n, generator=g) < 0.5
    assert len(set(off.flatten().tolist())) > 3 and 0 < mirror.sum() < n  # crops move, some mirror
    borders = 0
    for k in range(n):
        oy, ox = off[:, k].tolist()
        want = torch.nn.functional.pad(norm[k], (pad,) * 4)[:, oy:oy + size, ox:ox + size]
        want = want.flip(-1) if mirror[k] else want
        assert torch.equal(x[k], want)
        inside = torch.zeros(size + 2 * pad, size + 2 * pad, dtype=torch.bool)
        inside[pad:pad + size, pad:pad + size] = True
        border = ~inside[oy:oy + size, ox:ox + size]
        border = border.flip(-1) if mirror[k] else border
        # no value left equals the mean: only the border is 0
        assert (x[k][:, border] == 0).all() and (x[k][:, ~border] != 0).all()
        borders += int(border.sum())
    assert borders > n * size  # many samples show some border


def test_augmentation_does_not_depend_on_the_world_size():
    """The ranks of a 3-process run serve, together, the very batch one process serves (crops and flips
    included): what lets one process with gradient accumulation train the N-process model."""
    from resnext.data.cifar import CIFAR_MEAN, CIFAR_STD

    gen = torch.Generator().manual_seed(1)
    n, size = 60, 8
    imgs = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n)

    def batches(rank: int, world: int) -> list:
        ld = MemoryLoader(imgs, labels, 12 // world, place(rank=rank, world=world, seed=3), CIFAR_MEAN, CIFAR_STD,
                          True, 4, True)
        ld.set_epoch(1, 1)
        return list(ld)

    whole = batches(0, 1)
    parts = [batches(r, 3) for r in range(3)]
    assert len(whole) == 4 and all(len(p) == 4 for p in parts)
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[step][1] for p in parts]), y)
        assert torch.equal(torch.cat([p[step][0] for p in parts]), x)


def test_digits_are_scikit_learns_read_without_importing_it():
    """The digits a run trains on are scikit-learn's load_digits, value for value and in its order, read from
    the file it ships without importing scikit-learn (0.65 s of every digits start)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sk_digits

    from resnext.data.cifar import digits_arrays

    images, labels = digits_arrays()
    ref = sk_digits()
    assert images.shape == (1797, 8, 8) and (images == ref.images).all() and (labels == ref.target).all()
    code = "import sys; from resnext.data.cifar import load_digits; load_digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
