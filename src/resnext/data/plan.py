"""The per-rank sharding plan: steps, sample counts, shard bounds and the epoch's seeded order, written once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .base import Placement

# The permutation's generator seed. These constants and the 0x5EED mask are what the first loaders
# used; changing them would change every run's sample order (and break resuming older runs).
_SEED_MIX = (1_000_003, 7919)
_SEED_MOD = 2**63 - 1


def per_process(data, world_size: int) -> tuple[int, int]:
    """(training batch, evaluation batch) of each process: the global data.batch_size and
    data.eval_batch_size (0 = the training one) split evenly over ``world_size`` processes."""
    return data.batch_size // world_size, (data.eval_batch_size or data.batch_size) // world_size


def epoch_seed(seed: int, epoch: int) -> int:
    """Generator seed of epoch ``epoch``'s permutation: a function of (seed, epoch) only."""
    return ((seed * _SEED_MIX[0] + epoch * _SEED_MIX[1]) % _SEED_MOD) ^ 0x5EED


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of the n samples (int64, CPU): the same on every rank and every backend."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


@dataclass(frozen=True)
class ShardPlan:
    """Which samples one rank serves, in which order, for one split (the Loader contract in base.py).

    Every loader reads its lengths and indices here and nowhere else.

    Training: the epoch's order is ``epoch_permutation(size, seed, epoch)``. Global step k is positions
    [k*G, (k+1)*G) of that order, G = batch * world_size, and rank r takes positions
    [k*G + r*batch, k*G + (r+1)*batch). There are ``size // G`` full steps; the last ``size % G``
    positions are dropped, so every rank yields the same number of full batches. With ``last_unit`` n,
    they are kept as one more, partial step instead (fb.resnet.torch's loaders keep it), rounded down to
    a multiple of n: each rank takes an equal ``last_share`` of it, rank r positions
    [F*G + r*share, F*G + (r+1)*share) after the F full steps.

    Evaluation: the order is the split's own; rank r serves its contiguous shard ``bounds`` in order,
    in batches of ``batch``, the last one partial. The shards tile [0, size): every sample exactly once
    over the ranks, no padding.

    Repeated augmentation (``repeats`` R > 1, torchvision's RASampler): the epoch's order is the permutation
    with each sample written R times in a row (list L), dealt to the step's ``spread`` S groups of G / S
    positions as RASampler deals L to S GPUs: position k*G + g*(G/S) + j holds L[g + S*(k*G/S + j)]. So an
    image's copies sit in different groups of one step (different BN statistics), and an epoch holds
    ``size`` positions: size / R distinct images, each R times, augmented per position.

    A position (a place in the epoch's order) is what seeds a sample's augmentation, so starting at
    ``start_step`` or splitting the global batch over more ranks changes neither the samples of a
    global step nor their augmentation.
    """

    size: int  # samples in the split
    batch: int  # samples per batch on this rank (the global batch divided by world_size)
    rank: int  # this process's rank
    world_size: int  # number of ranks sharing the split
    seed: int  # run seed: the training order derives from (seed, epoch)
    train: bool  # training (shuffled, remainder dropped) or evaluation (sharded in order)
    last_unit: int = 0  # training: 0 drops the last partial global batch; n keeps it, a multiple of n images
    repeats: int = 1  # training: each sample of the order this many times (repeated augmentation)
    spread: int = 1  # training, with repeats: the step's groups its copies are dealt to

    def __post_init__(self) -> None:
        if self.batch < 1 or not 0 <= self.rank < self.world_size or self.size < 0:
            raise ValueError(f"no plan for size={self.size}, batch={self.batch}, rank {self.rank} of {self.world_size}")
        if self.last_unit < 0 or self.last_unit % self.world_size:
            raise ValueError(f"last_unit={self.last_unit} is not a multiple of the {self.world_size} ranks")
        if self.repeats < 1 or self.spread < 1 or self.global_batch % self.spread:
            raise ValueError(f"no repeated order with repeats={self.repeats} over {self.spread} groups of a "
                             f"global batch of {self.global_batch}")

    @classmethod
    def of(cls, size: int, batch: int, place: Placement, train: bool) -> ShardPlan:
        """The plan for ``place``'s rank, ``batch`` samples per rank and step."""
        return cls(size, batch, place.rank, place.world_size, place.seed, train,
                   place.last_batch_unit if train else 0, place.repeats if train else 1,
                   place.repeat_groups if train else 1)

    @property
    def global_batch(self) -> int:
        """Samples per step over all ranks."""
        return self.batch * self.world_size

    @property
    def bounds(self) -> tuple[int, int]:
        """Evaluation: this rank's shard [lo, hi) of the split (lo = rank*size // world). Training:
        this rank's share of the kept positions is not contiguous; the bounds are the whole (0, size)."""
        if self.train:
            return 0, self.size
        return self.rank * self.size // self.world_size, (self.rank + 1) * self.size // self.world_size

    @property
    def full_steps(self) -> int:
        """Training: the epoch's steps of a whole global batch."""
        return self.size // self.global_batch

    @property
    def last_share(self) -> int:
        """Training: the images each rank takes in the epoch's kept partial step (0: none is kept)."""
        if not self.train or not self.last_unit:
            return 0
        rest = self.size % self.global_batch
        return (rest - rest % self.last_unit) // self.world_size

    @property
    def num_samples(self) -> int:
        """Samples this rank yields in one epoch."""
        if self.train:
            return self.full_steps * self.batch + self.last_share
        lo, hi = self.bounds
        return hi - lo

    @property
    def steps(self) -> int:
        """Batches this rank yields in one epoch: the same on every rank when training."""
        if self.train:
            return self.full_steps + (self.last_share > 0)
        return -(-self.num_samples // self.batch)

    def positions(self, start_step: int = 0) -> torch.Tensor:
        """Positions in the epoch's order this rank serves from batch ``start_step`` on (int64, CPU)."""
        start = min(max(start_step, 0), self.steps)
        if not self.train:
            lo, hi = self.bounds
            return torch.arange(min(lo + start * self.batch, hi), hi)
        full = self.full_steps
        steps = torch.arange(min(start, full), full).view(-1, 1) * self.global_batch
        kept = (steps + self.rank * self.batch + torch.arange(self.batch).view(1, -1)).view(-1)
        if self.last_share and start <= full:
            share = self.last_share
            kept = torch.cat([kept, full * self.global_batch + self.rank * share + torch.arange(share)])
        return kept

    def order(self, epoch: int) -> torch.Tensor | None:
        """The epoch's order of the whole split (training), or None for evaluation's identity order."""
        if not self.train:
            return None
        perm = epoch_permutation(self.size, self.seed, epoch)
        if self.repeats == 1:
            return perm
        g, s = self.global_batch, self.spread
        p = torch.arange(self.size)
        step, rest = p // g, p % g
        entry = rest // (g // s) + s * (step * (g // s) + rest % (g // s))  # the place in L, RASampler's dealing
        return perm[(entry // self.repeats) % self.size]  # (a set smaller than half a batch wraps round)

    def indices(self, epoch: int, start_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample indices, their positions) this rank serves in ``epoch`` from batch ``start_step`` on,
        batch after batch; both int64 on the CPU. Evaluation's positions are the indices themselves."""
        pos = self.positions(start_step)
        order = self.order(epoch)
        return (pos if order is None else order[pos]), pos

    def batches(self, epoch: int, start_step: int = 0, device: torch.device | None = None
                ) -> Iterator[tuple[int, torch.Tensor]]:
        """(step, sample indices of that step's batch on ``device``) from ``start_step`` to the epoch's end."""
        idx = self.indices(epoch, start_step)[0].to(device or "cpu")
        first = min(max(start_step, 0), self.steps)
        for k, part in enumerate(torch.split(idx, self.batch) if len(idx) else ()):
            yield first + k, part
