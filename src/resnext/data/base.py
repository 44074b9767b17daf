"""The contract every data source meets: a Loader per split, exact lengths, epoch-seeded order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch


class Loader(Protocol):
    """Batches for one rank, already on the training device, ready for the model.

    - ``__iter__`` yields ``(images, labels)``: images float (dtype per precision) normalized, NCHW
      tensors that are channels_last in memory when asked; labels int64; both on the training device.
      A ten-crop val loader (``crops`` = 10) yields each image's ten crops as consecutive rows, N labels.
    - ``__len__`` is the exact number of batches this rank yields in one epoch. For training every
      rank yields the same number of full batches (the remainder of the epoch's permutation is
      dropped); for evaluation the ranks together yield every sample exactly once, no padding.
    - ``set_epoch(epoch, start_step)`` fixes the order for ``epoch`` as a function of (seed, epoch) and
      starts at batch ``start_step`` of it (mid-epoch resume).
    """

    num_samples: int  # samples this rank yields in one epoch
    crops: int  # image rows per sample: 1, or 10 for a ten-crop val loader (resnext.crops; labels: one per sample)

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def set_epoch(self, epoch: int, start_step: int = 0) -> None: ...


@dataclass
class Loaders:
    train: Loader  # training batches for this rank
    val: Loader  # evaluation batches for this rank (exactly-once over ranks)
    num_classes: int  # classes in the data set
    train_size: int  # training samples in the whole data set
    val_size: int  # evaluation samples in the whole data set
    class_names: list[str] | None = None  # names by class index, where the data set has them
    holdout: list[str] | None = None  # evaluation files held out of train/ (data.val_fraction), relative to data.root
    known_good: dict | None = None  # data.prescan: training files found good, {path: [size, mtime_ns]}


@dataclass(frozen=True)
class Placement:
    """Where and how batches are delivered: this rank's share of each batch (from the run's plan), its device,
    dtype and layout (from the trainer's precision settings), and the order's rules."""

    rank: int  # this process's rank
    world_size: int  # number of processes
    device: torch.device  # training device of this rank
    dtype: torch.dtype  # image dtype (float32, or float16/bfloat16 to halve transfer)
    channels_last: bool  # deliver NHWC memory format
    seed: int  # run seed: order and augmentation derive from it
    batch: int  # training images per batch on this rank (RunPlan.batch: the global batch split over the ranks)
    eval_batch: int  # evaluation images per batch on this rank (RunPlan.eval_batch)
    last_batch_unit: int = 0  # training: 0 drops an epoch's last partial global batch; n keeps it, rounded down
    # to a multiple of n images (the step's BN groups: RunPlan.last_batch_unit), each rank an equal share
    repeats: int = 1  # training: data.repeated_aug, each image of the order this many times
    repeat_groups: int = 1  # training: the step's BN groups its copies spread over (RunPlan.repeat_groups)
