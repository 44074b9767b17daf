"""data.auto_augment (TrivialAugmentWide, RandAugment) and data.random_erase as per-sample draws that both
loaders share, and the DALI form of the ops.

The torch loader runs torchvision's own transforms with torch's generator seeded per sample
(``seed ^ POLICY_SEED``). ``draw_policy`` replays exactly the draws those transforms make from that seed
(the op, its magnitude bin and sign per op, then random erasing's box), so the DALI pipeline, fed them by
its external source, applies to each sample the op and magnitude torchvision would have: the same choice of
ops and magnitudes, sample by sample, on either loader and however the batch is split. The magnitude
tables are torchvision's own (its ``_augmentation_space``); the DALI ops are DALI's ``auto_aug`` ones given
those tables, torchvision's zero fill and its sign conventions. Where DALI's pixels differ from PIL's
(interpolation of the warps, equalize, sharpness borders) the test measures by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

POLICY_SEED = 0x7A5E_ED  # the per-sample seed's stream for the policies' draws, apart from the crop's
BINS = 31  # torchvision's num_magnitude_bins for both policies
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision's RandomErasing defaults (value 0)


@dataclass(frozen=True)
class Policy:
    name: str  # data.auto_augment: none | ta_wide | randaugment
    ops: int  # ops per image: randaugment's data.randaugment_ops, ta_wide's 1, none's 0
    magnitude: int  # randaugment: the magnitude bin (data.randaugment_magnitude)
    erase: float  # data.random_erase: the probability of erasing a box after normalization
    size: int  # the training image's side (randaugment's translations scale with it)

    @classmethod
    def of(cls, cfg) -> Policy:
        name = str(cfg.get("auto_augment", "none"))
        return cls(name, int(cfg.get("randaugment_ops", 2)) if name == "randaugment" else int(name != "none"),
                   int(cfg.get("randaugment_magnitude", 9)), float(cfg.get("random_erase", 0.0) or 0.0),
                   int(cfg.image_size))

    @property
    def on(self) -> bool:
        return self.name != "none" or self.erase > 0

    @cached_property
    def space(self) -> list[tuple[str, torch.Tensor, bool]]:
        """(op name, magnitudes, signed) in torchvision's order: its own table for this policy."""
        import torchvision.transforms as T

        if self.name == "ta_wide":
            table = T.TrivialAugmentWide(num_magnitude_bins=BINS)._augmentation_space(BINS)
        elif self.name == "randaugment":
            table = T.RandAugment(self.ops, self.magnitude, BINS)._augmentation_space(BINS, (self.size, self.size))
        else:
            return []
        return [(name, mags, signed) for name, (mags, signed) in table.items()]


@dataclass(frozen=True)
class PolicyDraw:
    ops: tuple[tuple[int, int, int], ...]  # per op applied: (index in Policy.space, magnitude bin, negated)
    erase: tuple[int, int, int, int] | None  # random erasing's (top, left, height, width), or none


def draw_policy(policy: Policy, seed: int) -> PolicyDraw:
    """The draws torchvision's transforms make for a sample seeded ``seed``, in their order: TrivialAugmentWide
    (op, then a bin where the op has magnitudes, then a sign where it is signed) or RandAugment (op and sign,
    ``ops`` times, at the fixed bin), then RandomErasing (whether, then up to ten tries at a box)."""
    g = torch.Generator().manual_seed(seed ^ POLICY_SEED)  # the stream torch.manual_seed gives the torch loader
    space, ops = policy.space, []
    for _ in range(policy.ops):
        index = int(torch.randint(len(space), (1,), generator=g))
        _, mags, signed = space[index]
        if policy.name == "randaugment":
            b = policy.magnitude if mags.ndim > 0 else 0
        else:
            b = int(torch.randint(len(mags), (1,), generator=g)) if mags.ndim > 0 else 0
        ops.append((index, b, int(bool(signed and torch.randint(2, (1,), generator=g)))))
    erase = None
    if policy.erase > 0 and torch.rand(1, generator=g) < policy.erase:
        erase = _erase_box(policy.size, policy.size, g)
    return PolicyDraw(tuple(ops), erase)


def _erase_box(h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int] | None:
    """RandomErasing.get_params's draws on an h x w image (value 0: no noise drawn); None where its ten
    tries fail (it then leaves the image as it was)."""
    area = h * w
    log_ratio = torch.log(torch.tensor(ERASE_RATIO))
    for _ in range(10):
        erase_area = area * torch.empty(1).uniform_(*ERASE_SCALE, generator=g).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        eh, ew = int(round(math.sqrt(erase_area * aspect))), int(round(math.sqrt(erase_area / aspect)))
        if not (eh < h and ew < w):
            continue
        top = int(torch.randint(0, h - eh + 1, (1,), generator=g))
        left = int(torch.randint(0, w - ew + 1, (1,), generator=g))
        return top, left, eh, ew
    return None


def draw_columns(policy: Policy, draws: list[PolicyDraw]):
    """A batch's draws as the DALI external source's columns: per op k its indices, bins and signs (int32),
    then the erased boxes' anchors and shapes ((y, x) and (h, w), float32; (0, 0) shape: nothing erased)."""
    import numpy as np

    cols = []
    for k in range(policy.ops):
        for part in range(3):
            cols.append(np.array([d.ops[k][part] for d in draws], np.int32))
    if policy.erase > 0:
        boxes = np.array([d.erase or (0, 0, 0, 0) for d in draws], np.float32).reshape(-1, 4)
        cols += [np.ascontiguousarray(boxes[:, :2]), np.ascontiguousarray(boxes[:, 2:])]
    return cols


def columns(policy: Policy) -> int:
    """How many external-source columns ``draw_columns`` gives."""
    return 3 * policy.ops + (2 if policy.erase > 0 else 0)


def dali_ops(policy: Policy) -> list:
    """DALI's auto_aug operations in torchvision's order for this policy, with torchvision's magnitude tables.

    Sign conventions are torchvision's (measured against it): its shear by m about the corner is DALI's
    forward shear by -m, its translations map as DALI's forward ones (in whole pixels: it truncates the
    magnitude), and F.rotate turns as DALI's rotate by the same angle. Fill is torchvision's 0."""
    import numpy as np
    from nvidia.dali import fn
    from nvidia.dali.auto_aug import augmentations as a
    from nvidia.dali.auto_aug.core import augmentation

    @augmentation(param_device="auto")  # DALI's own, on fn.filter and fn.equalize (their experimental
    def sharpness(data, kernel):  # aliases, which DALI's suite still calls, warn that they are deprecated)
        return fn.filter(data, kernel)

    @augmentation
    def equalize(data, _):
        return fn.equalize(data)

    def whole(axis):
        return lambda m: np.array([np.trunc(m), 0.0] if axis == 0 else [0.0, np.trunc(m)], np.float32)

    def shear(axis):  # torchvision's shear by m (about the corner) moves pixels as DALI's forward shear by -m
        return lambda m: np.array([-m, 0.0] if axis == 0 else [0.0, -m], np.float32)

    def enhance(m):
        return np.float32(1.0 + m)

    def sharp(m):
        return a.sharpness_kernel(np.float32(m))

    def bits(m):  # torchvision's table holds the bits kept, as DALI's mask takes them
        return a.poster_mask_uint8(float(m))

    ops = {
        "Identity": a.identity,
        "ShearX": a.shear_x.augmentation(mag_to_param=shear(0)),
        "ShearY": a.shear_y.augmentation(mag_to_param=shear(1)),
        "TranslateX": a.translate_x_no_shape.augmentation(mag_to_param=whole(0)),
        "TranslateY": a.translate_y_no_shape.augmentation(mag_to_param=whole(1)),
        "Rotate": a.rotate,
        "Brightness": a.brightness.augmentation(mag_to_param=enhance),
        "Color": a.color.augmentation(mag_to_param=enhance),
        "Contrast": a.contrast.augmentation(mag_to_param=enhance),
        "Sharpness": sharpness.augmentation(mag_to_param=sharp),
        "Posterize": a.posterize.augmentation(mag_to_param=bits),
        "Solarize": a.solarize,
        "AutoContrast": a.auto_contrast,
        "Equalize": equalize,
    }
    out = []
    for name, mags, signed in policy.space:
        op = ops[name]
        if mags.ndim > 0:  # torchvision's own magnitudes, per bin
            op = op.augmentation(mag_range=mags.to(torch.float32).numpy(), randomly_negate=signed,
                                 name=f"tv_{name}")
        else:
            op = op.augmentation(name=f"tv_{name}")
        out.append(op)
    return out


def apply_dali(policy: Policy, images, cols: list, interp):
    """The policy's ops on a DALI batch of uint8 HWC ``images`` (pipeline with conditionals on), their
    draws in ``cols`` (the external source's columns from ``draw_columns``, ops only)."""
    from nvidia.dali.auto_aug.core import select, signed_bin

    augs = dali_ops(policy)
    for k in range(policy.ops):
        index, b, neg = cols[3 * k:3 * k + 3]
        images = select(augs, index, data=images, magnitude_bin=signed_bin(b, random_sign=neg),
                        num_magnitude_bins=BINS, fill_value=0, interp_type=interp)
    return images
