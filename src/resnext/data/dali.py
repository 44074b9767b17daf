"""NVIDIA DALI pipelines for ImageNet: decode (on the GPU, or DALI's CPU mode), augment, normalize."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from .base import DataError, Placement
from .imagenet_folder import EIGVAL, EIGVEC, MEAN, STD, Split, train_indices
from .memory import batch_seed, shard_bounds

# nvJPEG buffer hints sized for ImageNet (largest images ~ 4k x 3k): avoid reallocations mid-epoch
DEVICE_MEMORY_PADDING = 211025920
HOST_MEMORY_PADDING = 140544512


def _dali():
    from nvidia.dali import fn, pipeline_def, types

    return fn, pipeline_def, types


def _normalize(images, mirror, cfg, place: Placement, crop: int | None, lighting_mean=None):
    """crop_mirror_normalize to the delivery dtype and layout; ``lighting_mean`` is a per-sample mean."""
    fn, _, types = _dali()
    dtype = types.FLOAT16 if place.dtype == torch.float16 else types.FLOAT
    kwargs = {"crop": (crop, crop)} if crop else {}
    return fn.crop_mirror_normalize(
        images, dtype=dtype, output_layout="HWC" if place.channels_last else "CHW",
        mean=lighting_mean if lighting_mean is not None else [255 * m for m in MEAN],
        std=[255 * s for s in STD], mirror=mirror, **kwargs)


def _lighting_mean(strength: float):
    """AlexNet PCA lighting as a per-sample shift of the normalization mean: x + s - m = x - (m - s)."""
    fn, _, types = _dali()
    alpha = fn.random.normal(shape=[3], stddev=strength)
    a = [alpha[i] * (255 * EIGVAL[i]) for i in range(3)]
    shift = [EIGVEC[c][0] * a[0] + EIGVEC[c][1] * a[1] + EIGVEC[c][2] * a[2] for c in range(3)]
    return fn.stack(*[255 * MEAN[c] - shift[c] for c in range(3)])


def train_pipeline(files: list[str], labels: list[int], cfg, place: Placement, batch: int, seed: int):
    """Random-area/aspect crop fused with decoding, resize, optional jitter/lighting, flip, normalize."""
    fn, pipeline_def, types = _dali()
    gpu = place.device.type == "cuda" and cfg.backend != "dali_cpu"
    threads = max(1, cfg.workers)

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=place.device.index if gpu else None,
                  seed=seed, prefetch_queue_depth=2)
    def pipe():
        jpegs, lab = fn.readers.file(files=files, labels=labels, random_shuffle=False, pad_last_batch=False,
                                     name="reader")
        crop_args = dict(random_area=[cfg.min_area, 1.0], random_aspect_ratio=[cfg.min_aspect, 1 / cfg.min_aspect],
                         num_attempts=100, output_type=types.RGB)
        if gpu:
            images = fn.decoders.image_random_crop(jpegs, device="mixed", device_memory_padding=DEVICE_MEMORY_PADDING,
                                                   host_memory_padding=HOST_MEMORY_PADDING, **crop_args)
        else:
            images = fn.decoders.image_random_crop(jpegs, device="cpu", **crop_args)
        images = fn.resize(images, resize_x=cfg.image_size, resize_y=cfg.image_size,
                           interp_type=types.INTERP_LINEAR, antialias=True)
        if cfg.color_jitter > 0:
            j = cfg.color_jitter
            images = fn.color_twist(images, brightness=fn.random.uniform(range=[1 - j, 1 + j]),
                                    contrast=fn.random.uniform(range=[1 - j, 1 + j]),
                                    saturation=fn.random.uniform(range=[1 - j, 1 + j]))
        mean = _lighting_mean(cfg.lighting) if cfg.lighting > 0 else None
        mirror = fn.random.coin_flip(probability=0.5) if cfg.flip else 0
        out = _normalize(images, mirror, cfg, place, None, mean)
        return out, (lab.gpu() if gpu else lab)

    return pipe()


def val_pipeline(files: list[str], labels: list[int], cfg, place: Placement, batch: int):
    """Decode, resize the shorter side to val_resize, center crop val_crop, normalize."""
    fn, pipeline_def, types = _dali()
    gpu = place.device.type == "cuda" and cfg.backend != "dali_cpu"

    @pipeline_def(batch_size=batch, num_threads=max(1, cfg.workers), device_id=place.device.index if gpu else None,
                  seed=place.seed)
    def pipe():
        jpegs, lab = fn.readers.file(files=files, labels=labels, random_shuffle=False, pad_last_batch=True,
                                     name="reader")
        images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
        images = fn.resize(images, resize_shorter=cfg.val_resize, interp_type=types.INTERP_TRIANGULAR,
                           antialias=True)
        out = _normalize(images, 0, cfg, place, cfg.val_crop)
        return out, (lab.gpu() if gpu else lab)

    return pipe()


class DaliLoader:
    """A Loader over DALI pipelines. Training builds each epoch's pipeline from an explicit file list
    (the epoch's permutation of (seed, epoch), this rank's share), so order and resume are exact;
    evaluation reads this rank's contiguous shard once, its last batch partial."""

    def __init__(self, split: Split, cfg, place: Placement, batch: int, train: bool) -> None:
        self.split, self.cfg, self.place, self.batch, self.train = split, cfg, place, batch, train
        n = len(split)
        if train:
            self.steps = n // (batch * place.world_size)
            self.num_samples = self.steps * batch
        else:
            lo, hi = shard_bounds(n, place.rank, place.world_size)
            self.lo, self.hi = lo, hi
            self.num_samples = hi - lo
            self.steps = -(-self.num_samples // batch)
        self.epoch, self.start_step = 0, 0
        self._val_iter = None

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _iterator(self):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        p = self.place
        if self.train:
            idx = train_indices(len(self.split), self.batch, p.rank, p.world_size, p.seed, self.epoch,
                                self.start_step)
            files = [self.split.files[i] for i in idx]
            labels = [self.split.labels[i] for i in idx]
            # augmentation draws: a function of (seed, epoch, rank, start step)
            seed = batch_seed(p.seed, self.epoch, self.start_step, p.rank) % (2**31 - 1)
            pipe = train_pipeline(files, labels, self.cfg, p, self.batch, seed)
            policy = LastBatchPolicy.DROP
        else:
            if self._val_iter is not None:
                self._val_iter.reset()
                return self._val_iter
            pipe = val_pipeline(self.split.files[self.lo:self.hi], self.split.labels[self.lo:self.hi],
                                self.cfg, p, self.batch)
            policy = LastBatchPolicy.PARTIAL
        pipe.build()
        it = DALIGenericIterator(pipe, ["images", "labels"], reader_name="reader", last_batch_policy=policy,
                                 auto_reset=False)
        if not self.train:
            self._val_iter = it
        return it

    def _files(self) -> list[str]:
        if not self.train:
            return self.split.files[self.lo:self.hi]
        p = self.place
        idx = train_indices(len(self.split), self.batch, p.rank, p.world_size, p.seed, self.epoch, self.start_step)
        return [self.split.files[i] for i in idx]

    def _bad_file(self, step: int, error: Exception) -> DataError:
        """Name the file that broke decoding: check the batches around the failing one."""
        from .tools import _problem

        files = self._files()
        for f in files[max(0, step - 1) * self.batch:(step + 4) * self.batch] + files:
            why = _problem(Path(f))
            if why:
                return DataError(f"{f}: {why}; run `python -m resnext.data verify ROOT` to list every such file")
        first = next((ln for ln in str(error).splitlines() if "failure" in ln or "rror" in ln), str(error)[:200])
        return DataError(f"DALI could not read a file of {Path(files[0]).parents[1]}: {first.strip()}")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if (self.steps - self.start_step if self.train else self.num_samples) <= 0:
            return
        dev = self.place.device
        it, step = None, 0
        while True:
            try:
                it = it or self._iterator()  # the iterator decodes its first batches when created
                out = next(it)
            except StopIteration:
                return
            except RuntimeError as e:  # a file DALI cannot decode: name it
                self._val_iter = None
                raise self._bad_file(step, e) from None
            step += 1
            x, y = out[0]["images"], out[0]["labels"]
            if self.place.channels_last:
                x = x.permute(0, 3, 1, 2)  # NHWC memory, NCHW view
            # dali_cpu feeding a GPU: one pinned-free async copy per batch
            yield x.to(dev, non_blocking=True), y.view(-1).to(dev, torch.int64, non_blocking=True)
