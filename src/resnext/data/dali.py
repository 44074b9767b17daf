"""NVIDIA DALI pipelines for ImageNet: decode (on the GPU, or DALI's CPU mode), augment, normalize."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import torch

from ..crops import crop_boxes, mirrored_boxes
from ..errors import DataError
from .base import Placement
from .imagenet_augment import AugConfig, draw, image_size, interpolation, sample_seed
from .imagenet_folder import MEAN, STD
from .plan import ShardPlan
from .policies import Policy, apply_dali, columns, draw_columns, draw_policy
from .source import VERIFY_HINT, ImageSource, find_bad

# nvJPEG buffer hints sized for ImageNet's largest images (the values of NVIDIA's ImageNet DALI
# examples): buffers are allocated once, not grown mid-epoch; the preallocate hints feed the A100+
# hardware JPEG decoder.
DEVICE_MEMORY_PADDING = 211025920
HOST_MEMORY_PADDING = 140544512
PREALLOCATE_WIDTH, PREALLOCATE_HEIGHT = 5980, 6430


def resized(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``size`` as torchvision does: the long side is
    int(size * long / short), truncated. (DALI's resize_shorter rounds it: 451x300 -> 385 wide, not 384.)"""
    short, long = min(w, h), max(w, h)
    return (size, int(size * long / short)) if w <= h else (int(size * long / short), size)


def center(n: int, crop: int) -> float:
    """The crop_pos putting DALI's center crop of ``crop`` out of ``n`` where torchvision's starts:
    round((n - crop) / 2) with Python's round half to even (DALI rounds a half up)."""
    return round((n - crop) / 2) / (n - crop) if n > crop else 0.5


def at(start: int, n: int, crop: int) -> float:
    """The crop_pos putting DALI's crop of ``crop`` out of ``n`` at ``start`` (its anchor is
    round-half-up(crop_pos * (n - crop)), exact for these fractions)."""
    return start / (n - crop) if n > crop else 0.5


def ten_crop_centres(width: int, height: int, crop: int) -> tuple[float, float, float]:
    """crop_pos x, y of the ten-crop centre and x of the mirrored image's centre (as a mirrored crop of the
    original), at the boxes resnext.crops gives (fb.resnet.torch's rounding)."""
    top, left = crop_boxes(height, width, crop)[0]
    mirror_left = mirrored_boxes(height, width, crop)[0][1]
    return at(left, width, crop), at(top, height, crop), at(mirror_left, width, crop)


def ten_crop_positions(pos_x, pos_y, mirror_x) -> list[tuple]:
    """(crop_pos_x, crop_pos_y, mirror) of the ten crops in resnext.crops order: the centre (per-sample
    positions, ten_crop_centres), the four corners, then the mirrored image's five, each a mirrored crop of the original."""
    plain = [(pos_x, pos_y, 0), (0.0, 0.0, 0), (1.0, 0.0, 0), (0.0, 1.0, 0), (1.0, 1.0, 0)]
    mirror = [(mirror_x, pos_y, 1), (1.0, 0.0, 1), (0.0, 0.0, 1), (1.0, 1.0, 1), (0.0, 1.0, 1)]
    return plain + mirror


class Source:
    """DALI external source: the next batch of encoded images and labels read from an ImageSource, and for
    training each sample's augmentation (crop box, mirror, jitter factors, lighting-shifted mean) from
    imagenet_augment; for evaluation each sample's resized size and center-crop position, as torchvision's.

    Reading the samples here (not in DALI's file reader) is what lets the crop box come from our
    generator: it needs the image size, which the JPEG header gives."""

    def __init__(self, images: ImageSource, cfg, batch: int, train: bool) -> None:
        self.images, self.aug, self.batch, self.train = images, AugConfig.of(cfg), batch, train
        self.policy = Policy.of(cfg)  # data.auto_augment / random_erase: their draws travel as columns too
        self.resize, self.crop, self.crops = int(cfg.val_resize), int(cfg.val_crop), 1 if train else int(cfg.eval_crops)
        self.start([], [])

    def start(self, indices: list[int], positions: list[int], seed: int = 0, epoch: int = 0) -> None:
        """Serve ``indices`` (into the split) from the next call on; training draws each sample's
        augmentation from (seed, epoch, its position in the epoch's permutation)."""
        self.indices, self.positions, self.seed, self.epoch, self.cursor = indices, positions, seed, epoch, 0

    def __call__(self) -> tuple:
        lo = self.cursor
        if lo >= len(self.indices):
            raise StopIteration
        self.cursor = hi = min(lo + self.batch, len(self.indices))
        idx = self.indices[lo:hi]
        data, labels = [], np.empty(len(idx), np.int32)
        for k, i in enumerate(idx):  # read() raises a DataError naming a sample it cannot read
            encoded, labels[k] = self.images.read(i)
            data.append(np.frombuffer(encoded, dtype=np.uint8))
        sizes = [self._size(i, d) for i, d in zip(idx, data, strict=True)]
        if not self.train:  # explicit sizes and crop positions: torchvision's rounding, not DALI's
            out = np.array([resized(w, h, self.resize) for w, h in sizes], np.float32).reshape(-1, 2)
            if self.crops > 1:  # ten crops: fb.resnet.torch's centre, and the mirrored image's centre
                pos = np.array([ten_crop_centres(int(w), int(h), self.crop) for w, h in out.tolist()],
                               np.float32).reshape(-1, 3)
            else:
                pos = np.array([[center(n, self.crop) for n in wh] for wh in out.tolist()], np.float32).reshape(-1, 2)
            cols = [np.ascontiguousarray(a[:, i]) for a in (out, pos) for i in range(a.shape[1])]
            return data, labels, *cols
        n = len(idx)
        box, mirror = np.empty((n, 4), np.float32), np.empty(n, np.int32)
        jitter, mean = np.empty((n, 3), np.float32), np.empty((n, 3), np.float32)
        seeds = [sample_seed(self.seed, self.epoch, self.positions[lo + k]) for k in range(n)]
        for k, (w, h) in enumerate(sizes):
            a = draw(seeds[k], w, h, self.aug)
            box[k] = (a.x, a.y, a.w, a.h)
            mirror[k] = a.flip  # lighting below: x + s - m = x - (m - s), a per-sample mean
            jitter[k] = (a.brightness, a.contrast, a.saturation)
            mean[k] = [255 * (m - s) for m, s in zip(MEAN, a.shift, strict=True)]
        out = (data, labels, np.ascontiguousarray(box[:, :2]), np.ascontiguousarray(box[:, 2:]), mirror, mean)
        if self.aug.color_jitter > 0:
            out += tuple(np.ascontiguousarray(jitter[:, i]) for i in range(3))
        if self.policy.on:  # torchvision's draws for these seeds (the torch loader's, sample by sample)
            out += tuple(draw_columns(self.policy, [draw_policy(self.policy, sd) for sd in seeds]))
        return out

    def _size(self, i: int, data: np.ndarray) -> tuple[int, int]:
        try:
            return image_size(data)
        except ValueError as e:
            raise DataError(f"{self.images.name(i)}: {e}; {VERIFY_HINT}") from None


def _jitter(images, brightness, contrast, saturation):
    """torchvision's (PIL's) color jitter, in that order, each step stored in 8 bits as PIL does
    (blends truncated, gray levels rounded): brightness blends with black, contrast with the image's
    mean gray, saturation with its gray (ITU-R 601 luma). Arithmetic operators: runs on CPU and GPU."""
    from nvidia.dali import fn, types
    from nvidia.dali.math import floor

    def u8(x, trunc=True):  # the cast rounds to nearest and saturates to [0, 255]
        return fn.cast(floor(x) if trunc else x, dtype=types.UINT8)

    def gray(x):
        return u8(x[:, :, 0] * 0.299 + x[:, :, 1] * 0.587 + x[:, :, 2] * 0.114, trunc=False)

    x = u8(images * brightness)
    mean = floor(fn.reductions.mean(gray(x)) + 0.5)
    x = u8(mean + contrast * (x - mean))
    g = fn.expand_dims(gray(x), axes=[2], new_axis_names="C")
    return u8(saturation * x + (1 - saturation) * g)  # not g + s * (x - g): x - g wraps around in uint8


def _pipeline(source: Source, cfg, place: Placement, batch: int, gpu: bool):
    """Train: fused decode + crop of the given box, resize, optional jitter, mirror, data.auto_augment's ops,
    normalize with the lighting-shifted mean, data.random_erase's box. Val: decode, resize the shorter side, center crop, normalize (sizes and crop
    positions from Source, so the pixels are torchvision's); with ten crops, the ten crops stacked.
    Resizes use data.interpolation. ``gpu``: the mixed (nvJPEG) decoder and GPU operators on
    place.device; else DALI's CPU operators, whose outputs DALI moves to place.device when it is a GPU
    (through its own pinned staging buffers, so the training thread never copies from pageable memory);
    on a CPU device, DALI's CPU mode (device_id=None)."""
    from nvidia.dali import fn, pipeline_def, types

    cuda = place.device.type == "cuda"  # dali_cpu feeding a GPU too: DALI copies the outputs over itself
    device_id = (place.device.index if place.device.index is not None else torch.cuda.current_device()) if cuda else None
    decoder = dict(device="mixed", device_memory_padding=DEVICE_MEMORY_PADDING,
                   host_memory_padding=HOST_MEMORY_PADDING) if gpu else dict(device="cpu")
    layout = "HWC" if place.channels_last else "CHW"
    dtype = types.FLOAT16 if place.dtype == torch.float16 else types.FLOAT
    std = [255 * s for s in STD]
    interp = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}[interpolation(cfg)]

    policy = source.policy
    ops = policy.name != "none"

    @pipeline_def(batch_size=batch, num_threads=max(1, cfg.workers), device_id=device_id, prefetch_queue_depth=2,
                  enable_conditionals=ops)  # the policy's ops split the batch by the op each sample drew
    def train():
        jitter = cfg.color_jitter > 0
        jpegs, labels, anchor, shape, mirror, mean, *rest = fn.external_source(
            source=source, num_outputs=6 + 3 * jitter + columns(policy), batch=True)
        bcs, drawn = rest[:3 * jitter], rest[3 * jitter:]
        hints = dict(preallocate_width_hint=PREALLOCATE_WIDTH, preallocate_height_hint=PREALLOCATE_HEIGHT) if gpu else {}
        images = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="WH", normalized_anchor=False,
                                         normalized_shape=False, output_type=types.RGB, adjust_orientation=False,
                                         **decoder, **hints)
        images = fn.resize(images, resize_x=cfg.image_size, resize_y=cfg.image_size, interp_type=interp,
                           antialias=True)
        if jitter:
            images = _jitter(images, *bcs)
        if ops:  # after the flip, as torchvision's preset (its geometric ops do not commute with a flip)
            images = apply_dali(policy, fn.flip(images, horizontal=mirror), drawn, types.INTERP_LINEAR)
        images = fn.crop_mirror_normalize(images, dtype=dtype, output_layout=layout, mean=mean, std=std,
                                          mirror=0 if ops else mirror)
        if policy.erase > 0:  # after normalization, with 0 (the mean colour), as torchvision's RandomErasing
            images = fn.erase(images, anchor=drawn[-2], shape=drawn[-1], axis_names="HW", fill_value=0)
        return (images.gpu(), labels.gpu()) if cuda else (images, labels)

    @pipeline_def(batch_size=batch, num_threads=max(1, cfg.workers), device_id=device_id, prefetch_queue_depth=2)
    def val():
        ten = source.crops > 1
        jpegs, labels, width, height, pos_x, pos_y, *mirror_x = fn.external_source(
            source=source, num_outputs=7 if ten else 6, batch=True)
        # evaluation on the GPU: chroma upsampled as libjpeg-turbo (DALI's CPU mode, PIL) does it
        fancy = dict(jpeg_fancy_upsampling=True) if gpu else {}
        images = fn.decoders.image(jpegs, output_type=types.RGB, adjust_orientation=False, **decoder, **fancy)
        images = fn.resize(images, resize_x=width, resize_y=height, interp_type=interp, antialias=True)
        boxes = ten_crop_positions(pos_x, pos_y, *mirror_x) if ten else [(pos_x, pos_y, 0)]
        crops = [fn.crop_mirror_normalize(images, dtype=dtype, output_layout=layout, crop=(cfg.val_crop, cfg.val_crop),
                                          crop_pos_x=x, crop_pos_y=y, mirror=m, mean=[255 * v for v in MEAN], std=std)
                 for x, y, m in boxes]
        images = fn.stack(*crops) if ten else crops[0]  # ten crops: (10, ...) per sample
        return (images.gpu(), labels.gpu()) if cuda else (images, labels)

    return train() if source.train else val()


#: DALI error text that means the device or its memory failed, not a file (raised as what it is).
DEVICE_FAILURE = re.compile(r"out of memory|cudaErrorMemoryAllocation|CUDA_ERROR_OUT_OF_MEMORY|allocation failed"
                            r"|CUDA error|cudaError|CUDA driver|NVML", re.IGNORECASE)


def first_error_line(error: Exception) -> str:
    """The line of a DALI error that says what failed (its "... failure: ..." line where it has one)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return next((ln for ln in lines if "failure" in ln), next((ln for ln in lines if "rror" in ln), str(error)[:200]))


class DaliLoader:
    """A Loader over one DALI pipeline, built once and reset each epoch, serving what the rank's ShardPlan
    says. Training: each epoch this rank's share of the (seed, epoch) permutation, every sample augmented
    by its own (seed, epoch, position) draw. Evaluation: this rank's contiguous shard, in order, its last
    batch partial."""

    def __init__(self, images: ImageSource, cfg, place: Placement, batch: int, train: bool, gpu: bool) -> None:
        self.images, self.cfg, self.place, self.batch, self.gpu = images, cfg, place, batch, gpu
        self.plan = ShardPlan.of(len(images), batch, place, train)
        self.num_samples = self.plan.num_samples
        self.source = Source(images, cfg, batch, train)
        self.crops = self.source.crops
        self.epoch, self.start_step = 0, 0
        self._it = None  # DALIGenericIterator, kept for the loader's life (dropped only after a failure)
        self._open = False  # an epoch was left before its end: batches of it may still be in flight
        self.builds = 0  # pipelines built so far (one per loader unless a failure discarded it)

    def __len__(self) -> int:
        return self.plan.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _start(self, indices: list[int], positions: list[int]):
        """The iterator, set to serve ``indices``: the kept pipeline reset (its first batches prefetched
        from the new list), or the first one built."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if self._it is not None:
            self._finish_open_epoch()
            self.source.start(indices, positions, self.place.seed, self.epoch)
            self._it.reset()
            return self._it
        self.source.start(indices, positions, self.place.seed, self.epoch)
        pipe = _pipeline(self.source, self.cfg, self.place, self.batch, self.gpu)
        pipe.build()
        self.builds += 1
        self._it = DALIGenericIterator(pipe, ["images", "labels"], size=-1, auto_reset=False)
        return self._it

    def _finish_open_epoch(self) -> None:
        """An epoch left before its end (a bench, max_steps_per_epoch, a stop after the last step): the source
        serves nothing more and the batches already in flight (at most the prefetch depth) are dropped, so
        the pipeline can be reset rather than rebuilt."""
        if not self._open:
            return
        self.source.start([], [])
        try:
            while True:
                next(self._it)
        except StopIteration:
            pass
        self._open = False

    def _failure(self, step: int, error: RuntimeError) -> Exception:
        """What a DALI error is: the device failing (its memory, a CUDA error) is raised as such; otherwise
        the file that broke decoding, looked for among the batches in flight only (those the source served
        after the last delivered one), else DALI's own first line."""
        first = first_error_line(error)
        device = next((ln.strip() for ln in str(error).splitlines() if DEVICE_FAILURE.search(ln)), None)
        if device is not None:
            if re.search(r"memory|alloc", device, re.IGNORECASE) and "illegal" not in device:
                return torch.OutOfMemoryError(f"DALI on {self.place.device}: {device}")
            return RuntimeError(f"DALI on {self.place.device} failed (not a data problem): {device}")
        in_flight = self.source.indices[step * self.batch:self.source.cursor]
        return find_bad(self.images, in_flight) or DataError(
            f"DALI could not decode a file under {self.images.location}: {first}; {VERIFY_HINT}")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices, positions = (t.tolist() for t in self.plan.indices(self.epoch, self.start_step))
        if not indices:
            return
        dev, dtype = self.place.device, self.place.dtype
        step = 0
        try:
            it = self._start(indices, positions)  # decodes the first batches
            self._open = True
            while True:
                try:
                    out = next(it)
                except StopIteration:
                    self._open = False
                    return
                step += 1
                x, y = out[0]["images"], out[0]["labels"]
                if self.crops > 1:
                    x = x.flatten(0, 1)  # (N, 10, ...) -> each image's ten crops as consecutive rows
                if self.place.channels_last:
                    x = x.permute(0, 3, 1, 2)  # NHWC memory, NCHW view
                # dali_cpu on a CUDA device: DALI already copied the batch to the GPU (pipeline .gpu())
                yield x.to(dev, dtype, non_blocking=True), y.view(-1).to(dev, torch.int64, non_blocking=True)
        except DataError:
            self._it, self._open = None, False
            raise
        except RuntimeError as e:  # DALI's failure: a file it cannot decode, or the device
            self._it, self._open = None, False
            raise self._failure(step, e) from None
