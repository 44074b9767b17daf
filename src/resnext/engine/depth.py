"""Stochastic depth's draws as functions of (seed, epoch, step, position in the step's global batch).

One generator per optimizer step, seeded by (seed, epoch, step), draws a uniform per (image, block) for the
whole global batch on every rank; a rank keeps its rows, in the ShardPlan's layout (rank r holds positions
[r x batch, (r + 1) x batch) of the step), and micro-batches split those rows as they split the images. So
an image loses the same branches however the global batch is split over processes and micro-batches, and a
resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_DEPTH_SEED = (1_000_037, 7_933, 104_723)  # a stream apart from the loaders' and the mixer's


@dataclass(frozen=True)
class DepthDraws:
    blocks: int  # residual blocks with a drop rate (models.blocks.dropping_blocks)
    seed: int  # the run's seed

    def rows(self, epoch: int, step: int, rank: int, world: int, rows: int) -> torch.Tensor:
        """(rows, blocks) uniforms of rank ``rank``'s ``rows`` images of the step (of ``rows`` x ``world``)."""
        s = (self.seed * _DEPTH_SEED[0] + epoch * _DEPTH_SEED[1] + step * _DEPTH_SEED[2]) % (2**63 - 1)
        every = torch.rand(rows * world, self.blocks, generator=torch.Generator().manual_seed(s))
        return every[rank * rows:(rank + 1) * rows]
