"""torchvision backend for ImageNet folders: PIL decoding in DataLoader workers, the same semantics as DALI."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

from .base import Placement
from .imagenet_folder import EIGVAL, EIGVEC, MEAN, STD, Split, train_indices
from .memory import batch_seed, shard_bounds


class Lighting:
    """AlexNet PCA lighting noise on a [0, 1] CHW tensor (fb.resnet.torch's)."""

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self.vec = torch.tensor(EIGVEC)
        self.val = torch.tensor(EIGVAL)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.strength
        return img + (self.vec @ (alpha * self.val)).view(3, 1, 1)


def train_transform(cfg) -> T.Compose:
    steps = [T.RandomResizedCrop(cfg.image_size, scale=(cfg.min_area, 1.0), ratio=(cfg.min_aspect, 1 / cfg.min_aspect))]
    if cfg.flip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.color_jitter > 0:
        steps.append(T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
    steps.append(T.ToTensor())
    if cfg.lighting > 0:
        steps.append(Lighting(cfg.lighting))
    steps.append(T.Normalize(MEAN, STD))
    return T.Compose(steps)


def val_transform(cfg) -> T.Compose:
    return T.Compose([T.Resize(cfg.val_resize), T.CenterCrop(cfg.val_crop), T.ToTensor(), T.Normalize(MEAN, STD)])


class Files(Dataset):
    def __init__(self, split: Split, transform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        with Image.open(self.split.files[i]) as im:
            return self.transform(im.convert("RGB")), self.split.labels[i]


class IndexSampler(Sampler[int]):
    """Yields a list of indices set per epoch (the shared epoch order, or an evaluation shard)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TorchLoader:
    """A Loader over a torchvision DataLoader (workers, pinned memory on CUDA, persistent workers)."""

    def __init__(self, split: Split, cfg, place: Placement, batch: int, train: bool) -> None:
        self.split, self.place, self.batch, self.train = split, place, batch, train
        self.sampler = IndexSampler()
        n = len(split)
        if train:
            self.steps = n // (batch * place.world_size)
            self.num_samples = self.steps * batch
        else:
            self.lo, self.hi = shard_bounds(n, place.rank, place.world_size)
            self.num_samples = self.hi - self.lo
            self.steps = -(-self.num_samples // batch)
        self.generator = torch.Generator()
        workers = max(0, cfg.workers)
        self.loader = DataLoader(Files(split, train_transform(cfg) if train else val_transform(cfg)),
                                 batch_size=batch, sampler=self.sampler, num_workers=workers,
                                 pin_memory=place.device.type == "cuda", persistent_workers=workers > 0,
                                 drop_last=train, generator=self.generator)
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        p = self.place
        if self.train:
            self.sampler.indices = train_indices(len(self.split), self.batch, p.rank, p.world_size, p.seed, epoch,
                                                 start_step)
        else:
            self.sampler.indices = list(range(self.lo, self.hi))[start_step * self.batch:]
        # worker augmentation streams derive from this generator: a function of (seed, epoch, rank, start)
        self.generator.manual_seed(batch_seed(p.seed, epoch, start_step, p.rank))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dev, fmt = self.place.device, torch.channels_last if self.place.channels_last else torch.contiguous_format
        for x, y in self.loader:
            x = x.to(dev, non_blocking=True).to(dtype=self.place.dtype, memory_format=fmt)
            yield x, y.to(dev, non_blocking=True)
