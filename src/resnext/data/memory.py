"""In-memory data on the training device: whole uint8 sets, augmented there a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .base import Placement

# Batch augmentation draws come from a generator seeded by (seed, epoch, step, rank), so any
# batch can be re-made exactly: a resumed run continues with the very same crops and flips.
_MIX = (1_000_003, 7919, 104_729)


def batch_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (seed * _MIX[0] + epoch * _MIX[1] + step * _MIX[2] + rank) % (2**63 - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of the n samples: the same on every rank, a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(batch_seed(seed, epoch, 0, 0) ^ 0x5EED)
    return torch.randperm(n, generator=g)


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous evaluation shard of rank: the shards tile [0, n) exactly (no padding, no drops)."""
    return rank * n // world_size, (rank + 1) * n // world_size


class MemoryLoader:
    """Serves (images, labels) from uint8 NCHW tensors held on the training device.

    Training: each step the global batch is the next slice of the epoch's permutation and rank r
    takes its r-th part; the remainder of the permutation that does not fill a global batch is dropped.
    Augmentation (``pad`` > 0: zero-pad then random crop back to size; ``flip``: random mirror) is one
    gather per batch. Evaluation: rank r serves its contiguous shard in order, no augmentation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, place: Placement,
                 mean: tuple[float, ...], std: tuple[float, ...], train: bool, pad: int = 0,
                 flip: bool = False) -> None:
        self.images = images.to(place.device)
        self.labels = labels.to(place.device, torch.int64)
        self.batch = batch_size  # per rank
        self.place = place
        self.train = train
        self.pad = pad if train else 0
        self.flip = flip and train
        dev = place.device
        self.mean = torch.tensor(mean, device=dev).view(1, -1, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std, device=dev).view(1, -1, 1, 1) * 255)
        n = len(self.labels)
        if train:
            self.steps = n // (batch_size * place.world_size)
            self.num_samples = self.steps * batch_size
        else:
            lo, hi = shard_bounds(n, place.rank, place.world_size)
            self.num_samples = hi - lo
            self.steps = -(-self.num_samples // batch_size)
        self.epoch, self.start_step = 0, 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _indices(self) -> Iterator[tuple[int, torch.Tensor]]:
        p = self.place
        if self.train:
            perm = epoch_permutation(len(self.labels), p.seed, self.epoch).to(p.device)
            glob = self.batch * p.world_size
            for step in range(self.start_step, self.steps):
                lo = step * glob + p.rank * self.batch
                yield step, perm[lo:lo + self.batch]
        else:
            lo, hi = shard_bounds(len(self.labels), p.rank, p.world_size)
            for step in range(self.start_step, self.steps):
                a = lo + step * self.batch
                yield step, torch.arange(a, min(a + self.batch, hi), device=p.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, idx in self._indices():
            yield self._make(self.images[idx], step), self.labels[idx]

    def _make(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Augment (train), normalize and lay out one uint8 batch."""
        b, _, h, w = x.shape
        if self.pad or self.flip:
            x = self._crop_flip(x, step)  # NHWC
            x = x.permute(0, 3, 1, 2)  # NCHW view with channels_last strides
        x = (x.float() - self.mean) * self.inv_std
        fmt = torch.channels_last if self.place.channels_last else torch.contiguous_format
        return x.to(dtype=self.place.dtype, memory_format=fmt)

    def _crop_flip(self, x: torch.Tensor, step: int) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.place
        g = torch.Generator(device=x.device).manual_seed(batch_seed(p.seed, self.epoch, step, p.rank))
        dev = x.device
        off = torch.randint(0, 2 * self.pad + 1, (2, b), generator=g, device=dev)
        mirror = torch.rand(b, generator=g, device=dev) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool, device=dev)
        xs = torch.arange(w, device=dev)
        cols = off[1, :, None] + torch.where(mirror[:, None], w - 1 - xs, xs)  # (B, W)
        rows = off[0, :, None] + torch.arange(h, device=dev)  # (B, H)
        padded = torch.nn.functional.pad(x, (self.pad,) * 4)
        bi = torch.arange(b, device=dev)[:, None, None]
        # advanced indices around a slice put their dims first: result is (B, H, W, C)
        return padded[bi, :, rows[:, :, None], cols[:, None, :]]
