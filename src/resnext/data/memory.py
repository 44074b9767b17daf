"""In-memory data on the training device: whole uint8 sets, augmented there a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..crops import ten_crops
from ..errors import DataError
from .base import Placement
from .plan import ShardPlan

# Augmentation draws come from a generator seeded by (seed, epoch, step) that draws for the whole
# global batch; each rank takes its slice. Any batch can be re-made exactly (a resumed run continues
# with the very same crops and flips), and the draws do not depend on the world size: one process with
# gradient accumulation sees the crops and flips that N processes see.
_MIX = (1_000_003, 7919, 104_729)


def batch_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * _MIX[0] + epoch * _MIX[1] + step * _MIX[2]) % (2**63 - 1)


class MemoryLoader:
    """Serves (images, labels) from uint8 NCHW tensors held on the training device.

    Which samples each step serves comes from the rank's ShardPlan (training: its part of the epoch's
    permutation, the remainder dropped; evaluation: its contiguous shard in order). Training
    augmentation (``pad`` > 0: pad, then random crop back to size; ``flip``: random mirror) is one
    gather per batch, drawn from (seed, epoch, step) for the global batch, of which the rank takes its part.
    Evaluation with ``crops`` = 10 serves each stored image's ten ``crop`` crops (resnext.crops).

    The padding is added after normalisation, as zeros: the border is the normalisation mean colour, as in
    the official code (fb.resnet.torch's and ResNeXt's datasets/cifar10.lua: ColorNormalize, HorizontalFlip,
    then RandomCrop(32, 4), which zero-pads the normalised image), not black. Digits go through the same
    rule: their border is mid-gray (DIGITS_MEAN 0.5) around the images' black background.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, place: Placement,
                 mean: tuple[float, ...], std: tuple[float, ...], train: bool, pad: int = 0,
                 flip: bool = False, crops: int = 1, crop: int = 0) -> None:
        self.images = images.to(place.device)
        self.labels = labels.to(place.device, torch.int64)
        self.place = place
        self.pad = pad if train else 0
        self.flip = flip and train
        self.crops, self.crop = (1, 0) if train else (crops, crop)  # evaluation: ten ``crop`` crops per image
        if self.crops > 1 and crop > min(images.shape[-2:]):
            raise DataError(f"data.val_crop={crop}: ten crops of {crop}x{crop} do not fit in the "
                            f"{images.shape[-2]}x{images.shape[-1]} images; choose data.val_crop <= {min(images.shape[-2:])}")
        dev = place.device
        self.mean = torch.tensor(mean, device=dev).view(1, -1, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std, device=dev).view(1, -1, 1, 1) * 255)
        self.plan = ShardPlan.of(len(self.labels), batch_size, place, train)
        self.num_samples = self.plan.num_samples
        self.epoch, self.start_step = 0, 0

    def __len__(self) -> int:
        return self.plan.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, idx in self.plan.batches(self.epoch, self.start_step, self.place.device):
            yield self._make(self.images[idx], step), self.labels[idx]

    def _make(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Normalize, augment (train: zero padding is then the mean colour) and lay out one uint8 batch."""
        x = ((x.float() - self.mean) * self.inv_std).to(self.place.dtype)
        if self.pad or self.flip:
            x = self._crop_flip(x, step)  # NHWC
            x = x.permute(0, 3, 1, 2)  # NCHW view with channels_last strides
        if self.crops > 1:
            x = ten_crops(x, self.crop)
        return x.contiguous(memory_format=torch.channels_last if self.place.channels_last else torch.contiguous_format)

    def _crop_flip(self, x: torch.Tensor, step: int) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.place
        g = torch.Generator(device=x.device).manual_seed(batch_seed(p.seed, self.epoch, step))
        dev = x.device
        mine = slice(p.rank * b, (p.rank + 1) * b)  # this rank's part of the global batch's draws
        off = torch.randint(0, 2 * self.pad + 1, (2, b * p.world_size), generator=g, device=dev)[:, mine]
        mirror = (torch.rand(b * p.world_size, generator=g, device=dev)[mine] < 0.5 if self.flip
                  else torch.zeros(b, dtype=torch.bool, device=dev))
        xs = torch.arange(w, device=dev)
        cols = off[1, :, None] + torch.where(mirror[:, None], w - 1 - xs, xs)  # (B, W)
        rows = off[0, :, None] + torch.arange(h, device=dev)  # (B, H)
        padded = torch.nn.functional.pad(x, (self.pad,) * 4)  # zeros of the normalized batch: the mean colour
        bi = torch.arange(b, device=dev)[:, None, None]
        # advanced indices around a slice put their dims first: result is (B, H, W, C)
        return padded[bi, :, rows[:, :, None], cols[:, None, :]]
