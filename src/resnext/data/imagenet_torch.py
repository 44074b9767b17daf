"""torchvision backend for ImageNet sources: PIL decoding in DataLoader workers, the same semantics as DALI."""

from __future__ import annotations

import io
import multiprocessing.util
import signal
import weakref
from collections.abc import Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.transforms import functional as F

from ..crops import ten_crops
from ..errors import DataError
from .base import Placement
from .imagenet_augment import AugConfig, draw, interpolation, sample_seed
from .imagenet_folder import MEAN, STD
from .plan import ShardPlan
from .policies import POLICY_SEED
from .source import VERIFY_HINT, ImageSource, find_bad


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGTERM and SIGINT. ``kill -TERM -- -PGID`` (timeout,
    Slurm's cancel) and a terminal's Ctrl-C reach the whole process group; a worker dying of them would
    make the main process raise mid-step. The trainer alone decides what a stop signal means (save, then
    exit); workers end when it closes the loader or exits."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)  # the trainer's Ctrl-C counting pipe (resnext.engine.stop) is the trainer's alone


_LIVE: weakref.WeakSet[DataLoader] = weakref.WeakSet()  # loaders whose workers _stop_workers ends


def _stop_workers() -> None:
    """At interpreter exit, end the workers of every loader still alive the ordinary way (a stop message on
    each index queue, then join), as torch does for a loader collected earlier. multiprocessing's exit hook
    runs this first, then SIGTERMs its remaining children and waits for them: workers ignoring SIGTERM would
    keep it waiting forever. torch's own exit hook has already made this shutdown a no-op (it leaves the
    workers to multiprocessing's SIGTERM), hence the flag is lifted while it runs."""
    from torch.utils.data import _utils

    exiting, _utils.python_exit_status = _utils.python_exit_status, False
    try:
        for loader in list(_LIVE):
            it = getattr(loader, "_iterator", None)  # the persistent workers' iterator, once started
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
    finally:
        _utils.python_exit_status = exiting


# an exit finalizer of multiprocessing's: run by its exit hook before that terminates child processes
multiprocessing.util.Finalize(None, _stop_workers, exitpriority=100)

FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}  # PIL's, antialiased when shrinking


def auto_augment(cfg):
    """torchvision's policy for data.auto_augment (None for none), with the run's resize filter."""
    name = str(cfg.get("auto_augment", "none"))
    mode = T.InterpolationMode(interpolation(cfg))
    if name == "ta_wide":
        return T.TrivialAugmentWide(interpolation=mode)
    if name == "randaugment":
        return T.RandAugment(int(cfg.randaugment_ops), int(cfg.randaugment_magnitude), interpolation=mode)
    return None


class TrainTransform:
    """Crop the drawn box and resize it to image_size (PIL's antialiased bilinear or bicubic, as torchvision's
    RandomResizedCrop), mirror, jitter brightness, contrast, saturation (torchvision's and fb.resnet.torch's
    definitions, in this fixed order where they shuffle it: DALI's pipeline does the same), PCA lighting,
    normalize. All parameters come from imagenet_augment.draw. data.auto_augment (TrivialAugmentWide,
    RandAugment) follows the flip and data.random_erase the normalization, as in torchvision's
    ClassificationPresetTrain; both are torchvision's own, their draws seeded per sample."""

    def __init__(self, cfg) -> None:
        self.aug, self.size, self.filter = AugConfig.of(cfg), int(cfg.image_size), FILTERS[interpolation(cfg)]
        self.jitter, self.lighting = cfg.color_jitter > 0, cfg.lighting > 0
        self.policy = auto_augment(cfg)
        p = float(cfg.get("random_erase", 0.0) or 0.0)
        self.erase = T.RandomErasing(p) if p > 0 else None

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        if self.policy is None and self.erase is None:
            return self._base(img, seed)
        with torch.random.fork_rng(devices=[]):  # torchvision's policies draw from torch's generator:
            torch.manual_seed(seed ^ POLICY_SEED)  # seeded per sample, so resumable and worker-independent
            return self._base(img, seed, self.policy, self.erase)

    def _base(self, img: Image.Image, seed: int, policy=None, erase=None) -> torch.Tensor:
        a = draw(seed, img.width, img.height, self.aug)
        # crop, then resize (torchvision's resized_crop, DALI's slice + resize): resize(box=) would let the
        # filter read pixels outside the box into the edge pixels
        img = img.crop((a.x, a.y, a.x + a.w, a.y + a.h)).resize((self.size, self.size), self.filter)
        if a.flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.jitter:
            img = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(img, a.brightness), a.contrast),
                                      a.saturation)
        if policy is not None:  # after the crop and flip, as torchvision's ClassificationPresetTrain
            img = policy(img)
        x = F.to_tensor(img)
        if self.lighting:
            x += torch.tensor(a.shift).view(3, 1, 1)
        x = F.normalize(x, MEAN, STD)
        return erase(x) if erase is not None else x


class ValTransform:
    """Resize the shorter side to val_resize (antialiased bilinear or bicubic), center crop val_crop, normalize.
    With data.eval_crops=10: the ten val_crop crops of the resized image (resnext.crops), (10, C, crop, crop)."""

    def __init__(self, cfg) -> None:
        self.resize, self.crop, self.crops = int(cfg.val_resize), int(cfg.val_crop), int(cfg.eval_crops)
        self.filter = F.InterpolationMode(interpolation(cfg))

    def __call__(self, img: Image.Image, seed: int = 0) -> torch.Tensor:
        img = F.resize(img, self.resize, self.filter, antialias=True)
        if self.crops > 1:
            return ten_crops(F.normalize(F.to_tensor(img), MEAN, STD)[None], self.crop)
        return F.normalize(F.to_tensor(F.center_crop(img, self.crop)), MEAN, STD)


class Samples(Dataset):
    """Images of an ImageSource; an item is (index, augmentation seed), as IndexSampler yields them. A
    sample that cannot be read or decoded comes back as a blank image with label -1 - index (an exception
    raised in a worker would cost a traceback and a stuck worker): TorchLoader turns it into a DataError."""

    def __init__(self, images: ImageSource, transform, shape: tuple[int, ...]) -> None:
        self.images, self.transform, self.shape = images, transform, shape  # shape: one item's image tensor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = item
        try:
            data, label = self.images.read(i)
            with Image.open(io.BytesIO(data)) as im:
                img = im.convert("RGB")
        except Exception:  # a DataError from read, or one of PIL's many types for a bad file
            return torch.zeros(self.shape), -1 - i
        return self.transform(img, seed), label


class IndexSampler(Sampler):
    """Yields (index, seed) pairs set per epoch: the shared epoch order with per-position augmentation
    seeds, or an evaluation shard (seed 0). Seeds travel with the indices, so persistent workers need
    no per-epoch state."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.positions: list[int] | None = None
        self.seed = self.epoch = 0

    def __iter__(self):
        if self.positions is None:
            return ((i, 0) for i in self.indices)
        pairs = zip(self.indices, self.positions, strict=True)
        return ((i, sample_seed(self.seed, self.epoch, p)) for i, p in pairs)

    def __len__(self) -> int:
        return len(self.indices)


class TorchLoader:
    """A Loader over a torch DataLoader (workers, pinned memory on CUDA, persistent workers); which
    samples it serves, and their augmentation positions, come from the rank's ShardPlan."""

    def __init__(self, images: ImageSource, cfg, place: Placement, batch: int, train: bool) -> None:
        self.images, self.place = images, place
        self.plan = ShardPlan.of(len(images), batch, place, train)
        self.num_samples = self.plan.num_samples
        self.sampler = IndexSampler()
        workers = max(0, cfg.workers)
        self.crops = 1 if train else int(cfg.eval_crops)
        side = int(cfg.image_size if train else cfg.val_crop)
        shape = (3, side, side) if self.crops == 1 else (self.crops, 3, side, side)
        transform = TrainTransform(cfg) if train else ValTransform(cfg)
        self.loader = DataLoader(Samples(images, transform, shape), batch_size=batch, sampler=self.sampler,
                                 num_workers=workers, pin_memory=place.device.type == "cuda",
                                 persistent_workers=workers > 0, worker_init_fn=ignore_stop_signals)
        _LIVE.add(self.loader)
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.plan.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        s = self.sampler
        indices, positions = self.plan.indices(epoch, start_step)
        s.indices, s.positions = indices.tolist(), positions.tolist() if self.plan.train else None
        s.seed, s.epoch = self.place.seed, epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dev, fmt = self.place.device, torch.channels_last if self.place.channels_last else torch.contiguous_format
        if not self.sampler.indices:
            return
        for x, y in self.loader:
            if (y < 0).any():  # CPU labels: no device sync
                i = -1 - int(y.min())
                raise find_bad(self.images, [i]) or DataError(f"{self.images.name(i)}: not decodable; {VERIFY_HINT}")
            if self.crops > 1:
                x = x.flatten(0, 1)  # (N, 10, C, H, W) -> each image's ten crops as consecutive rows
            x = x.to(dev, non_blocking=True).to(dtype=self.place.dtype, memory_format=fmt)
            yield x, y.to(dev, non_blocking=True)
