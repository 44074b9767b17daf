"""Mixup and CutMix on whole batches, on the training device, with draws that do not depend on the world size.

Per optimizer step, one draw from a generator seeded by (seed, epoch, step): which of the two (when both are
on, each half the time, as torchvision's RandomChoice of MixUp and CutMix), the mixing weight lam ~
Beta(alpha, alpha) and, for CutMix, the box's centre. Every image is mixed with the one before it in its BN
group (the first with the group's last: a roll by one), so a step's images, labels and partners are those of
the global batch however it is split over processes and micro-batches. The geometry and label rule are
torchvision.transforms.v2's (its MixUp and CutMix are the oracle of the tests): mixup blends lam x image +
(1 - lam) x partner; cutmix pastes the partner's box of half-sides 0.5 sqrt(1 - lam) x (W, H) around the
centre, clipped, and lam becomes the part of the image left; labels are the one-hot targets mixed by lam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_MIX_SEED = (1_000_033, 7_927, 104_729)  # a stream apart from the loaders' (seed, epoch, step) draws


@dataclass(frozen=True)
class Draw:
    cutmix: bool  # CutMix (True) or Mixup
    lam: float  # the image's own share before any box clipping
    cx: int = 0  # CutMix: the box centre, column
    cy: int = 0  # CutMix: the box centre, row


@dataclass(frozen=True)
class Mixer:
    mixup_alpha: float  # data.mixup_alpha (0 = off)
    cutmix_alpha: float  # data.cutmix_alpha (0 = off)
    classes: int  # one-hot width
    group: int  # images mixed among themselves: a BN group
    seed: int

    @property
    def on(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(self, epoch: int, step: int, height: int, width: int) -> Draw:
        """The step's draw: a function of (seed, epoch, step) only."""
        s = (self.seed * _MIX_SEED[0] + epoch * _MIX_SEED[1] + step * _MIX_SEED[2]) % (2**63 - 1)
        g = torch.Generator().manual_seed(s)
        both = self.mixup_alpha > 0 and self.cutmix_alpha > 0
        cutmix = bool(torch.rand((), generator=g) < 0.5) if both else self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        a, b = torch._standard_gamma(torch.full((2,), float(alpha), dtype=torch.float64), generator=g).tolist()
        lam = a / (a + b) if a + b > 0 else 0.5  # Beta(alpha, alpha) from two Gamma(alpha) draws
        cx, cy = (int(torch.randint(width, (), generator=g)), int(torch.randint(height, (), generator=g))) \
            if cutmix else (0, 0)
        return Draw(cutmix, lam, cx, cy)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, d: Draw, group: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return mix(x, y, d, self.classes, group or self.group)


def box(d: Draw, height: int, width: int) -> tuple[int, int, int, int]:
    """CutMix's pasted box (x1, y1, x2, y2) for draw ``d`` on a height x width image."""
    r = 0.5 * math.sqrt(1.0 - d.lam)
    hw, hh = int(r * width), int(r * height)
    return max(d.cx - hw, 0), max(d.cy - hh, 0), min(d.cx + hw, width), min(d.cy + hh, height)


def mix(x: torch.Tensor, y: torch.Tensor, d: Draw, classes: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed images, soft targets) of a batch whose consecutive ``group`` images mix among themselves."""
    n = x.shape[0]
    order = torch.arange(n, device=x.device).view(-1, min(group, n)).roll(1, dims=1).view(-1)  # roll within groups
    target = torch.nn.functional.one_hot(y, classes).to(torch.float32)
    if d.cutmix:
        h, w = x.shape[-2:]
        x1, y1, x2, y2 = box(d, h, w)
        out = x.clone()
        out[..., y1:y2, x1:x2] = x[order][..., y1:y2, x1:x2]
        lam = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
    else:
        lam = d.lam
        out = x[order].mul_(1.0 - lam).add_(x.mul(lam))
    return out, target[order].mul_(1.0 - lam).add_(target.mul(lam))
