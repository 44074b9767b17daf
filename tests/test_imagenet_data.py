"""ImageNet folders through DALI (CPU mode) and torchvision: exact sharding, paper augmentation, parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagenet_data_helpers import coordinate_folder, index_folder
from omegaconf import OmegaConf

from resnext.config import DataConfig
from resnext.data import DataError, Placement, build_loaders
from resnext.data.imagenet_folder import MEAN, STD

BACKENDS = ["dali_cpu", "torch"]


def cfg(root, backend, **kw):
    base = dict(dataset="imagenet", root=str(root), backend=backend, batch_size=4, image_size=32, val_resize=36,
                val_crop=32, workers=1, color_jitter=0.0, lighting=0.0)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **kw})


def place(rank=0, world=1, seed=0, cl=False, dtype=torch.float32):
    return Placement(rank, world, torch.device("cpu"), dtype, cl, seed)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Back to 0..255 RGB values (NCHW float)."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return x.float() * std + mean


def ids(x: torch.Tensor) -> list[int]:
    p = (pixels(x).mean(dim=(2, 3)) / 8).round().long()
    return (p[:, 0] + 32 * p[:, 1]).tolist()


@pytest.fixture(scope="module")
def index_root(tmp_path_factory):
    return index_folder(tmp_path_factory.mktemp("idx"), 30, 37)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world", [1, 2])
def test_train_epoch_visits_each_image_once_over_ranks(index_root, backend, world):
    seen = []
    for r in range(world):
        ld = build_loaders(cfg(index_root, backend, batch_size=4), place(r, world)).train
        ld.set_epoch(1)
        got = [i for x, _ in ld for i in ids(x)]
        assert len(got) == ld.num_samples == len(ld) * (4 // world)
        seen += got
    assert len(seen) == len(set(seen)) == (30 // 4) * 4  # every image at most once; only the remainder dropped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world", [1, 2, 3])
def test_val_counts_each_image_exactly_once(index_root, backend, world):
    seen = []
    for r in range(world):
        ld = build_loaders(cfg(index_root, backend, batch_size=6), place(r, world)).val
        got = [i for x, y in ld for i in ids(x)]
        assert len(got) == ld.num_samples and len(ld) == -(-ld.num_samples // (6 // world))
        seen += got
    assert sorted(seen) == list(range(37))


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_order_seeded_and_resumable(index_root, backend):
    def order(seed, epoch, start=0):
        ld = build_loaders(cfg(index_root, backend), place(seed=seed)).train
        ld.set_epoch(epoch, start)
        return [i for x, _ in ld for i in ids(x)]

    first = order(0, 0)
    assert order(0, 0) == first
    assert order(0, 1) != first and order(1, 0) != first
    assert order(0, 0, start=3) == first[12:]  # resume mid-epoch: the order continues exactly


def test_both_backends_share_the_order(index_root):
    orders = []
    for backend in BACKENDS:
        ld = build_loaders(cfg(index_root, backend), place(seed=5)).train
        ld.set_epoch(2)
        orders.append([i for x, _ in ld for i in ids(x)])
    assert orders[0] == orders[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl,dtype", [(False, torch.float32), (True, torch.float32), (True, torch.float16)])
def test_layout_and_dtype(index_root, backend, cl, dtype):
    ld = build_loaders(cfg(index_root, backend), place(cl=cl, dtype=dtype)).train
    x, y = next(iter(ld))
    assert x.shape == (4, 3, 32, 32) and x.dtype == dtype and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last) == cl


@pytest.mark.parametrize("backend", BACKENDS)
def test_crops_follow_the_paper(tmp_path, backend):
    w, h, s = 200, 150, 32
    root = coordinate_folder(tmp_path, 48, (w, h))
    ld = build_loaders(cfg(root, backend, batch_size=48, image_size=s), place(seed=3)).train
    ld.set_epoch(0)
    x, _ = next(iter(ld))
    areas, aspects, mirrored = [], [], 0
    for img in pixels(x):
        xs = img[0].mean(0).numpy() / 255 * (w - 1)  # column -> source x
        ys = img[1].mean(1).numpy() / 255 * (h - 1)  # row -> source y
        cw = abs(xs[-1] - xs[0]) * s / (s - 1)
        ch = abs(ys[-1] - ys[0]) * s / (s - 1)
        mirrored += xs[-1] < xs[0]
        areas.append(cw * ch / (w * h))
        aspects.append(cw / ch)
    areas, aspects = np.array(areas), np.array(aspects)
    # edges blur by about a source pixel in the estimate: allow 4% on the bounds
    assert areas.min() >= 0.08 * 0.96 and areas.max() <= 1.04
    assert aspects.min() >= 0.75 * 0.96 and aspects.max() <= 4 / 3 * 1.04
    assert areas.max() - areas.min() > 0.3  # the scale really varies
    assert 12 <= mirrored <= 36  # about half of 48


def test_val_parity_dali_cpu_vs_torch(tmp_path):
    from resnext.data.tools import make_fake

    make_fake(tmp_path, 2, 2, 6, (120, 90))
    outs = {}
    for backend in BACKENDS:
        ld = build_loaders(cfg(tmp_path, backend, batch_size=4, val_resize=48, val_crop=40), place()).val
        outs[backend] = torch.cat([x for x, _ in ld])
    a, b = outs["dali_cpu"], outs["torch"]
    assert a.shape == b.shape == (12, 3, 40, 40) and a.dtype == b.dtype
    # Both decode with libjpeg-turbo and shrink with an antialiased triangle filter; they differ by
    # rounding to 8 bits at different stages: at most ~1 gray level, 1 / (255 * 0.225) = 0.017 normalized.
    diff = (a - b).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.05


def test_jitter_and_lighting_change_pixels(index_root):
    plain = build_loaders(cfg(index_root, "dali_cpu"), place()).train
    aug = build_loaders(cfg(index_root, "dali_cpu", color_jitter=0.4, lighting=0.1), place()).train
    x0, _ = next(iter(plain))
    x1, _ = next(iter(aug))
    assert (x0 - x1).abs().mean() > 0.01


@pytest.mark.parametrize("layout,expect", [
    ({"train/a": 2}, "val: missing"),
    ({"train/a": 2, "train/b": 0, "val/a": 1, "val/b": 1}, "empty class folder"),
    ({"train/a": 2, "val/z": 1}, "classes differ from train/"),
])
def test_unusable_roots_are_one_line(tmp_path, layout, expect):
    from PIL import Image

    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / folder / f"{i}.JPEG")
    with pytest.raises(DataError) as e:
        build_loaders(cfg(tmp_path, "dali_cpu"), place())
    assert expect in str(e.value) and str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_corrupt_file_is_named(index_root, tmp_path):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(index_root, root)
    victim = sorted((root / "train" / "c1").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])
    ld = build_loaders(cfg(root, "dali_cpu", batch_size=30 // 4 * 4), place()).train
    with pytest.raises(DataError, match=str(victim)):
        for _ in ld:
            pass


@pytest.mark.gpu
def test_mixed_decoder_matches_cpu_mode(index_root):
    outs = {}
    for backend, dev in (("dali_gpu", torch.device("cuda", 0)), ("dali_cpu", torch.device("cpu"))):
        p = Placement(0, 1, dev, torch.float32, True, 0)
        ld = build_loaders(cfg(index_root, backend, batch_size=6), p).val
        xs = [x for x, _ in ld]
        assert xs[0].device.type == dev.type and xs[0].is_contiguous(memory_format=torch.channels_last)
        outs[backend] = torch.cat(xs).cpu()
    assert (outs["dali_gpu"] - outs["dali_cpu"]).abs().mean() < 0.02  # nvJPEG vs libjpeg-turbo
    p = Placement(0, 1, torch.device("cuda", 0), torch.float16, True, 0)
    x, y = next(iter(build_loaders(cfg(index_root, "dali_gpu"), p).train))
    assert x.dtype == torch.float16 and x.is_cuda and y.is_cuda
