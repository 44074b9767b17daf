"""ImageNet folders through DALI (CPU mode) and torchvision: exact sharding and resume, paper augmentation, errors."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from imagenet_data_helpers import (
    PackedSource,
    cfg,
    coordinate_folder,
    crop_boxes,
    huge_jpeg,
    ids,
    index_folder,
    loaders_for,
    photo_folder,
    place,
)
from PIL import Image

from resnext.data import DataError, Placement
from resnext.data.imagenet_augment import AugConfig, crop_box, draw, image_size
from resnext.data.imagenet_folder import scan_root

BACKENDS = ["dali_cpu", "torch"]


@pytest.fixture(scope="module")
def index_root(tmp_path_factory):
    return index_folder(tmp_path_factory.mktemp("idx"), 30, 37)


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photo"), tmp_path_factory.mktemp("portrait"))


def batches(root, backend, p: Placement, epoch=0, start=0, **kw) -> list[torch.Tensor]:
    ld = loaders_for(cfg(root, backend, **kw), p).train
    ld.set_epoch(epoch, start)
    return [x for x, _ in ld]


def test_scan_follows_imagefolder(photo_root):
    from torchvision.datasets import ImageFolder

    train, val = scan_root(str(photo_root))
    ref = ImageFolder(str(photo_root / "train"))
    assert train.classes == ref.classes and list(zip(train.files, train.labels, strict=True)) == ref.samples
    assert len(train) == 16 and len(val) == 13 and val.classes == train.classes


def test_file_list_replaces_the_train_scan(photo_root, tmp_path):
    train, _ = scan_root(str(photo_root))
    lst = tmp_path / "list.txt"
    pairs = zip(train.files[:5], train.labels[:5], strict=True)
    lst.write_text("".join(f"{f[len(str(photo_root)) + 1:]} {lab}\n" for f, lab in pairs))
    got, _ = scan_root(str(photo_root), str(lst))
    assert got.files == train.files[:5] and got.labels == train.labels[:5]
    lst.write_text("train/n00000000/missing.JPEG 0\n")
    with pytest.raises(DataError, match=f"missing.JPEG: listed in {lst}:1 but missing"):
        scan_root(str(photo_root), str(lst))
    outside = tmp_path / "outside.JPEG"  # a real file, listed from outside data.root: refused, not read
    shutil.copy(train.files[0], outside)
    for entry in (str(outside), f"../{outside.name}", f"train/../../{outside.name}"):
        lst.write_text(f"{entry} 0\n")
        with pytest.raises(DataError, match=re.escape(f"{lst}:1: {entry!r} is outside data.root {photo_root}; "
                                                      "list paths relative to it")):
            scan_root(str(photo_root), str(lst))


def test_hidden_class_folders_with_images_are_refused_not_skipped(photo_root, tmp_path):
    """A ".name" folder holding images would be dropped without a word: refused in one line; one holding no
    images (.ipynb_checkpoints) is ignored as before."""
    root = tmp_path / "r"
    shutil.copytree(photo_root, root)
    (root / "train" / ".ipynb_checkpoints").mkdir()
    assert scan_root(str(root))[0].classes == scan_root(str(photo_root))[0].classes
    hidden = root / "train" / ".n00000009"
    hidden.mkdir()
    shutil.copy(next((root / "train" / "n00000000").iterdir()), hidden / "a.JPEG")
    with pytest.raises(DataError, match=re.escape(f"{hidden}: a hidden folder holding 1 image(s), which training "
                                                  f"would skip; rename it to use it as a class, or move it out of "
                                                  f"{root / 'train'}")):
        scan_root(str(root))



def source_loader(source, backend, p: Placement, train: bool, **kw):
    """A backend's Loader built straight on an ImageSource (what build_imagenet does after open_sources)."""
    c = cfg("unused", backend, **kw)
    batch = c.batch_size // p.world_size
    if backend == "torch":
        from resnext.data.imagenet_torch import TorchLoader

        return TorchLoader(source, c, p, batch, train)
    from resnext.data.dali import DaliLoader

    return DaliLoader(source, c, p, batch, train, gpu=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_read_any_image_source(photo_root, backend):
    """The loaders see samples only through the ImageSource interface: a packed source holding the
    folder's samples gives bit-identical augmented training batches and evaluation batches."""
    folder, val = scan_root(str(photo_root))
    aug = dict(color_jitter=0.4, lighting=0.1, workers=0 if backend == "torch" else 1)
    for src, train in ((folder, True), (val, False)):
        a, b = (source_loader(s, backend, place(seed=6), train, **aug) for s in (src, PackedSource(src)))
        a.set_epoch(1)
        b.set_epoch(1)
        xa, xb = [torch.cat([x for x, _ in ld]) for ld in (a, b)]
        assert len(xa) == len(src) - len(src) % 4 * train and torch.equal(xa, xb)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_sample_of_a_source_is_named_by_it(photo_root, backend):
    folder, _ = scan_root(str(photo_root))
    packed = PackedSource(folder, damage={5: lambda b: b[:300]})
    ld = source_loader(packed, backend, place(), True, batch_size=16, workers=0 if backend == "torch" else 1)
    with pytest.raises(DataError, match=rf"^{re.escape(packed.name(5))}: not decodable[^\n]*$"):
        list(ld)

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world", [1, 2])
def test_train_epoch_visits_each_image_once_over_ranks(index_root, backend, world):
    seen = []
    for r in range(world):
        ld = loaders_for(cfg(index_root, backend, batch_size=4), place(r, world)).train
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
        ld = loaders_for(cfg(index_root, backend, batch_size=6), place(r, world)).val
        for _ in range(2):  # a second pass (the DALI pipeline is reused) serves the same shard again
            got = [i for x, y in ld for i in ids(x)]
            assert len(got) == ld.num_samples and len(ld) == -(-ld.num_samples // (6 // world))
        seen += got
    assert sorted(seen) == list(range(37))


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_order_seeded_and_resumable(index_root, backend):
    def order(seed, epoch, start=0):
        return [i for x in batches(index_root, backend, place(seed=seed), epoch, start) for i in ids(x)]

    first = order(0, 0)
    assert order(0, 0) == first
    assert order(0, 1) != first and order(1, 0) != first
    assert order(0, 0, start=3) == first[12:]  # resume mid-epoch: the order continues exactly


def test_both_backends_share_the_order(index_root):
    orders = [[i for x in batches(index_root, b, place(seed=5), epoch=2) for i in ids(x)] for b in BACKENDS]
    assert orders[0] == orders[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_gives_bit_identical_augmented_batches(photo_root, backend):
    """Guarantee: a batch depends only on (seed, epoch, step), not on start_step, earlier epochs run by
    the same loader, or the number of workers; so a resumed run sees exactly the uninterrupted batches."""
    aug = dict(color_jitter=0.4, lighting=0.1)
    ld = loaders_for(cfg(photo_root, backend, workers=1, **aug), place(seed=7)).train
    ld.set_epoch(0)
    list(ld)  # an earlier epoch on the same loader (DALI reuses its pipeline, torch its workers)
    ld.set_epoch(1)
    whole = [x for x, _ in ld]
    resumed = batches(photo_root, backend, place(seed=7), epoch=1, start=2, workers=0 if backend == "torch" else 2,
                      **aug)
    assert len(whole) == 4 and len(resumed) == 2
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed, strict=True))
    other = batches(photo_root, backend, place(seed=8), epoch=1, **aug)
    assert not torch.equal(whole[0], other[0])  # a different seed: different batches


def test_ranks_serve_the_single_process_batches(photo_root):
    """Augmentation follows the sample's place in the epoch, not the rank: 2 ranks of 2 images rebuild
    the single-process batches of 4 exactly."""
    aug = dict(color_jitter=0.4, lighting=0.1)
    one = batches(photo_root, "dali_cpu", place(seed=3), **aug)
    two = [batches(photo_root, "dali_cpu", place(r, 2, seed=3), **aug) for r in range(2)]
    assert all(torch.equal(a, torch.cat([b, c])) for a, b, c in zip(one, *two, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl,dtype", [(False, torch.float32), (True, torch.float32), (True, torch.float16),
                                      (False, torch.bfloat16)])
def test_layout_and_dtype(index_root, backend, cl, dtype):
    loaders = loaders_for(cfg(index_root, backend, val_crop=24), place(cl=cl, dtype=dtype))
    for ld, side in ((loaders.train, 32), (loaders.val, 24)):
        x, y = next(iter(ld))
        assert x.shape == (4, 3, side, side) and x.dtype == dtype and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last) == cl


def test_crop_box_ranges_and_fallback():
    rng = random.Random(0)
    for w, h in ((500, 375), (375, 500), (224, 224)):
        boxes = np.array([crop_box(rng, w, h, 0.08, 0.75) for _ in range(5000)])
        area = boxes[:, 2] * boxes[:, 3] / (w * h)
        aspect = boxes[:, 2] / boxes[:, 3]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= h).all()
        assert area.min() > 0.075 and area.max() <= 1 and area.min() < 0.1 and area.max() > 0.9
        # integer sides round the aspect by up to ~2% on the smallest boxes
        assert aspect.min() > 0.73 and aspect.max() < 1.37 and aspect.min() < 0.8 and aspect.max() > 1.25
    # an image far wider than 4:3 can rarely fit a random box; after 10 misses: the central 4:3 box
    assert crop_box(random.Random(1), 1000, 10, 0.9, 0.75) == (493, 0, 13, 10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crops_follow_the_paper(tmp_path, backend):
    w, h, s = 200, 150, 32
    root = coordinate_folder(tmp_path, 48, (w, h))
    x = torch.cat([torch.cat(batches(root, backend, place(seed=3), epoch=e, batch_size=48, image_size=s))
                   for e in range(2)])
    areas, aspects, mirrored = crop_boxes(x, w, h)
    # edges blur by about a source pixel in the estimate: allow 4% on the bounds
    assert areas.min() >= 0.08 * 0.96 and areas.max() <= 1.04
    assert aspects.min() >= 0.75 * 0.96 and aspects.max() <= 4 / 3 * 1.04
    assert areas.max() - areas.min() > 0.5 and aspects.max() / aspects.min() > 1.4  # both really vary
    assert 30 <= mirrored.sum() <= 66  # about half of 96 (binomial: 48 +- 4.9, outside is ~1e-4)


def test_the_loaders_crop_the_drawn_boxes(tmp_path):
    """The boxes read back from the pixels are the ones imagenet_augment drew for those samples."""
    from resnext.data.imagenet_augment import sample_seed
    from resnext.data.plan import ShardPlan

    w, h = 200, 150
    root = coordinate_folder(tmp_path, 16, (w, h))
    x = torch.cat(batches(root, "dali_cpu", place(seed=4), epoch=1, batch_size=16, image_size=32))
    areas, aspects, mirrored = crop_boxes(x, w, h)
    _, positions = ShardPlan.of(16, 16, place(seed=4), train=True).indices(1)
    drawn = [draw(sample_seed(4, 1, p), w, h, AugConfig(0.08, 0.75, True, 0, 0)) for p in positions.tolist()]
    assert np.allclose(areas, [a.w * a.h / (w * h) for a in drawn], rtol=0.05)
    assert np.allclose(aspects, [a.w / a.h for a in drawn], rtol=0.05)
    assert mirrored.tolist() == [a.flip for a in drawn]


def test_image_size_reads_headers(tmp_path):
    Image.new("RGB", (37, 23)).save(tmp_path / "a.jpg", quality=90, progressive=True)
    Image.new("RGB", (19, 41)).save(tmp_path / "b.png")
    assert image_size((tmp_path / "a.jpg").read_bytes()) == (37, 23)
    assert image_size((tmp_path / "b.png").read_bytes()) == (19, 41)
    with pytest.raises(ValueError, match="not an image"):
        image_size(b"\xff\xd8\xff\xe0 truncated")


@pytest.mark.parametrize("layout,expect", [
    ({"train/a": 2}, "val: missing"),
    ({"train/a": 2, "train/b": 0, "val/a": 1, "val/b": 1}, "empty class folder"),
    ({"train/a": 2, "val/z": 1}, "classes differ from train/"),
    ({"val/a": 2}, "train: missing"),
])
def test_unusable_roots_are_one_line(tmp_path, layout, expect):
    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / folder / f"{i}.JPEG")
    with pytest.raises(DataError) as e:
        loaders_for(cfg(tmp_path, "dali_cpu"), place())
    assert expect in str(e.value) and str(tmp_path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("backend,expect", [("dali_gpu", "needs a CUDA training device"), ("pil", "choose auto")])
def test_unusable_backends_are_one_line(index_root, backend, expect):
    with pytest.raises(DataError, match=expect):
        loaders_for(cfg(index_root, backend), place())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damage,expect", [(lambda b: b[:300], "not decodable"), (lambda b: b"GIF89a" + b, ""),
                                           (huge_jpeg, "too large an image to decode")])
def test_bad_file_is_named_in_one_line(index_root, tmp_path, backend, damage, expect):
    root = tmp_path / "r"
    shutil.copytree(index_root, root)
    victim = sorted((root / "train" / "c1").iterdir())[2]
    victim.write_bytes(damage(victim.read_bytes()))
    ld = loaders_for(cfg(root, backend, batch_size=28), place()).train
    # (no `as e`: an ExceptionInfo kept in this frame would free the DataLoader in a garbage cycle, where
    # its worker shutdown stalls 5 s; a training process keeps its loaders to the end)
    with pytest.raises(DataError, match=rf"^{re.escape(str(victim))}: {expect}[^\n]*$"):
        list(ld)


@pytest.mark.gpu
def test_mixed_decoder_matches_cpu_mode(photo_root):
    aug = dict(color_jitter=0.4, lighting=0.1, batch_size=4)
    outs = {}
    for backend, dev in (("dali_gpu", torch.device("cuda", 0)), ("dali_cpu", torch.device("cpu"))):
        p = Placement(0, 1, dev, torch.float16, True, 0, 4, 4)
        loaders = loaders_for(cfg(photo_root, backend, **aug), p)
        val, train = [x for x, _ in loaders.val], batches(photo_root, backend, p, **aug)
        for x in (val[0], train[0]):
            assert x.device.type == dev.type and x.dtype == torch.float16
            assert x.is_contiguous(memory_format=torch.channels_last)
        y = next(iter(loaders.train))[1]
        assert y.device.type == dev.type and y.dtype == torch.int64
        outs[backend] = torch.cat(val).float().cpu(), torch.cat(train).float().cpu()
    for k in range(2):  # nvJPEG vs libjpeg-turbo: about a gray level apart (0.017), same boxes and draws
        diff = (outs["dali_gpu"][k] - outs["dali_cpu"][k]).abs()
        assert diff.mean() < 0.02 and diff.shape[1:] == (3, 32, 32)


class CountingSource(PackedSource):
    """A PackedSource that counts its reads."""

    reads = 0

    def read(self, index: int) -> tuple[bytes, int]:
        self.reads += 1
        return super().read(index)


def test_dali_pipelines_are_built_once_and_reset_each_epoch(index_root):
    """Three training epochs (the first left after 2 of its 7 steps, as max_steps_per_epoch and the bench
    leave them; the third resumed at step 3) and three evaluations build one pipeline each, and serve what a
    freshly built pipeline serves for that epoch (the batches still in flight from a left epoch dropped)."""
    def fresh(train, epoch=0, start=0):
        ld = loaders_for(cfg(index_root, "dali_cpu", batch_size=4), place(seed=2))
        ld = ld.train if train else ld.val
        ld.set_epoch(epoch, start)
        return [i for x, _ in ld for i in ids(x)]

    loaders = loaders_for(cfg(index_root, "dali_cpu", batch_size=4), place(seed=2))
    train, val = loaders.train, loaders.val
    seen = []
    for epoch, start, take in ((0, 0, 2), (1, 0, None), (2, 3, None)):
        train.set_epoch(epoch, start)
        got = []
        for k, (x, _) in enumerate(train):
            if k == take:
                break
            got += ids(x)
        seen.append(got)
        for _ in range(1 if epoch < 2 else 2):
            val.set_epoch(0)
            assert [i for x, _ in val for i in ids(x)] == fresh(False)
    assert seen == [fresh(True)[:8], fresh(True, 1), fresh(True, 2, 3)]
    assert len(seen[1]) == 28 and seen[0] != seen[1][:8] and sorted(fresh(False)) == list(range(37))
    assert train.builds == 1 and val.builds == 1


def test_dali_failure_is_named_from_the_batches_in_flight_only(photo_root):
    """A decode failure looks for the bad file among the batches the source served after the last delivered
    one (not the rank's whole epoch); a device failure (CUDA, out of memory) is not taken for a bad file."""
    folder, _ = scan_root(str(photo_root))
    src = CountingSource(folder, damage={5: lambda b: b[:300]})
    ld = source_loader(src, "dali_cpu", place(), True, batch_size=4, workers=1)
    with pytest.raises(DataError, match=rf"^{re.escape(src.name(5))}: not decodable[^\n]*$"):
        list(ld)
    assert ld.builds == 1
    served = ld.source.cursor
    src.reads, step = 0, ld.source.indices.index(5) // 4  # the batch DALI failed on
    err = ld._failure(step, RuntimeError("Error in CPU operator `decoders.image_slice`: nvImageCodec failure: '#3'"))
    assert str(err).startswith(src.name(5)) and 0 < src.reads <= served - 4 * step < 16  # in-flight batches only
    src.reads = 0
    err = ld._failure(0, RuntimeError("Error in MIXED operator `decoders.image_slice`:\nCUDA error: out of memory"))
    assert isinstance(err, torch.OutOfMemoryError) and "out of memory" in str(err) and src.reads == 0
    err = ld._failure(0, RuntimeError("Critical error in pipeline:\nCUDA error: an illegal memory access"))
    assert type(err) is RuntimeError and "not a data problem" in str(err) and src.reads == 0
    # nothing bad among the batches in flight: DALI's own first line, as a data error
    good = CountingSource(folder)
    ok = source_loader(good, "dali_cpu", place(), True, batch_size=4, workers=1)
    ok.source.start(list(range(16)), list(range(16)))
    ok.source.cursor = 8
    err = ok._failure(1, RuntimeError("Error in CPU operator `decoders.image_slice`,\nnvImageCodec failure: '#3'"))
    assert isinstance(err, DataError) and "nvImageCodec failure: '#3'" in str(err) and good.reads == 4


def test_val_fraction_holds_out_each_class_by_file_name(photo_root, tmp_path):
    """data.val_fraction on a folder without val/: about that fraction of each class, at least one, chosen by a
    hash of the relative path (the same wherever the folder lies); a recorded list overrides the choice."""
    root = tmp_path / "noval"
    shutil.copytree(photo_root / "train", root / "train")
    train, val = scan_root(str(root), val_fraction=0.25)
    whole, _ = scan_root(str(photo_root))
    assert sorted(train.files + val.files) == sorted(f.replace(str(photo_root), str(root)) for f in whole.files)
    assert not set(train.files) & set(val.files) and train.classes == val.classes == whole.classes
    for c in range(len(whole.classes)):
        n = whole.labels.count(c)
        assert val.labels.count(c) == min(n - 1, max(1, round(0.25 * n)))  # stratified
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    assert [os.path.relpath(f, moved) for f in scan_root(str(moved), val_fraction=0.25)[1].files] == [
        os.path.relpath(f, root) for f in val.files]
    recorded = [os.path.relpath(f, root) for f in train.files[:2]]
    assert [os.path.relpath(f, root) for f in scan_root(str(root), val_fraction=0.25, holdout=recorded)[1].files] \
        == recorded
    with pytest.raises(DataError, match="file.s. this run held out for evaluation are gone"):
        scan_root(str(root), val_fraction=0.25, holdout=["train/n00000000/gone.JPEG"])
    with pytest.raises(DataError, match=r"val exists and data.val_fraction=0.25 would hold out part of train/"):
        scan_root(str(photo_root), val_fraction=0.25)
    with pytest.raises(DataError, match=r"or hold out part of train/: data.val_fraction=0.1\)$"):
        scan_root(str(root))


def test_prescan_finds_bad_training_files_by_header_and_ending(photo_root, tmp_path):
    """The start-up check reads a few kilobytes per file: a truncated JPEG (no end-of-image marker), an empty
    file, PNG data under a .JPEG name and a header claiming 30,000^2 pixels are named; unchanged files a run
    found good are not read again."""
    from resnext.data.prescan import file_problem, prescan

    root = tmp_path / "r"
    shutil.copytree(photo_root, root)
    files = sorted(str(f) for f in (root / "train").rglob("*.JPEG"))
    assert all(file_problem(f) is None for f in files)
    data = Path(files[0]).read_bytes()
    cases = {"cut.JPEG": (data[:len(data) // 2], "truncated (no JPEG end-of-image marker)"),
             "empty.JPEG": (b"", "empty file"),
             "huge.JPEG": (huge_jpeg(data), "too large an image to decode"),
             "png.JPEG": (b"\x89PNG\r\n\x1a\n" + data, "PNG data in a .JPEG file")}
    for name, (content, why) in cases.items():
        (root / "train" / "n00000000" / name).write_bytes(content)
        assert file_problem(str(root / "train" / "n00000000" / name)).startswith(why), name
    said = []
    good = prescan(files, 2, {}, said.append)
    assert set(good) == set(files) and said[0] == f"checking {len(files)} training file(s) (headers and endings; 0 known good)"
    said.clear()
    assert prescan(files, 2, good, said.append) == good and said == []  # nothing new: nothing read
    bad = sorted(str(p) for p in (root / "train" / "n00000000").glob("*.JPEG") if p.name in cases)
    with pytest.raises(DataError, match=r"^4 training file\(s\) cannot be used: .*; \.\.\. \(`python -m resnext.data "
                                        r"verify` lists them all"):
        prescan(files + bad, 2, good, said.append)
    assert said[0].startswith("checking 4 training file(s) (headers and endings; ")
