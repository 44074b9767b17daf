"""Synthetic data: random normalized images and labels made once on the training device (benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .base import Loaders, Placement
from .plan import ShardPlan

DISTINCT_BATCHES = 4  # batches actually generated; the loader cycles through them


class SyntheticLoader:
    """Yields ready batches of random data; costs nothing per step, so it measures the model alone."""

    def __init__(self, n: int, batch: int, size: int, classes: int, place: Placement, train: bool,
                 crops: int = 1) -> None:
        plan = ShardPlan.of(n, batch, place, train)
        self.steps, self.num_samples, self.crops = plan.steps, plan.num_samples, crops
        self.full_steps, self.last_share = (plan.full_steps, plan.last_share) if train else (plan.steps, 0)
        g = torch.Generator().manual_seed(place.seed * 31 + place.rank)
        fmt = torch.channels_last if place.channels_last else torch.contiguous_format
        self.batches = []
        for i in range(min(DISTINCT_BATCHES, max(self.steps, 1))):
            b = min(batch, self.num_samples - i * batch) if not train else batch
            x = torch.randn(max(b, 0) * crops, 3, size, size, generator=g)  # ten-crop evaluation: ten rows each
            y = torch.randint(0, classes, (max(b, 0),), generator=g)
            self.batches.append((x.to(place.device, place.dtype).to(memory_format=fmt), y.to(place.device)))
        self.start_step = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.start_step = start_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(self.start_step, self.steps):
            x, y = self.batches[step % len(self.batches)]
            yield (x, y) if step < self.full_steps else (x[:self.last_share], y[:self.last_share])


def build_synthetic(cfg, place: Placement, num_classes: int) -> Loaders:
    batch, eval_batch = place.batch, place.eval_batch  # the plan's split of the global batches
    train = SyntheticLoader(cfg.synthetic_train, batch, cfg.synthetic_size, num_classes, place, True)
    val = SyntheticLoader(cfg.synthetic_val, eval_batch, cfg.synthetic_size, num_classes, place, False,
                          cfg.eval_crops)
    return Loaders(train, val, num_classes, cfg.synthetic_train, cfg.synthetic_val)
