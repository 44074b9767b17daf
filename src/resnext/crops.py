"""Multi-crop evaluation: the geometry of fb.resnet.torch's TenCrop, and the softmax average over crops.

fb.resnet.torch (datasets/transforms.lua, TenCrop) takes, from the image resized so its shorter side is
256, the centre and the four corner crops of 224 x 224, each also mirrored; its train.lua sums the ten
outputs. Its CenterCrop starts at ceil((W - size) / 2) (and the same for H), in the image and in its
mirror; the boxes here are those (torchvision's ten_crop rounds half to even: a pixel to the left where
W - size is 1 mod 4, the one place the two differ). Here the ten softmax outputs are averaged (the usual reading of "10-crop testing"; the top-1
of a sum of logits can differ).

With ``data.eval_crops=10`` every val loader delivers, per image, its ten crops in the order of
``crop_boxes`` (centre, top-left, top-right, bottom-left, bottom-right, then the same five of the mirrored
image): a batch of N images is (N * 10, C, crop, crop), image-major, with N labels. The ImageNet loaders
(DALI and torchvision) crop the whole resized image; the in-memory sets crop their stored images.
``mean_over_crops`` turns the model's (N * 10, K) logits back into one row per image.
"""

from __future__ import annotations

import torch

CROPS = (1, 10)  # crops per evaluation image: the single centre crop, or ten crops


def crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the centre, top-left, top-right, bottom-left and bottom-right ``size`` crops, the
    centre where fb.resnet.torch's CenterCrop puts it: ceil((H - size) / 2), ceil((W - size) / 2)."""
    if size > min(height, width):
        raise ValueError(f"a {size}x{size} crop does not fit in a {height}x{width} image")
    bottom, right = height - size, width - size
    centre = (-(-bottom // 2), -(-right // 2))
    return [centre, (0, 0), (0, right), (bottom, 0), (bottom, right)]


def mirrored_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) in the original image of the five crops of the mirrored image: crop k + 5 is the mirror
    of the original's crop at these boxes (where W - size is odd, the mirrored image's centre crop is not
    the mirror of the centre crop: rounded up in the mirror, it starts at floor((W - size) / 2) here)."""
    return [(top, width - size - left) for top, left in crop_boxes(height, width, size)]


def ten_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """The ten crops of every image of an (N, C, H, W) batch, image-major: (N * 10, C, size, size)."""
    if images.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    plain = [images[:, :, t:t + size, x:x + size] for t, x in crop_boxes(h, w, size)]
    mirror = [images[:, :, t:t + size, x:x + size].flip(3) for t, x in mirrored_boxes(h, w, size)]
    return torch.stack(plain + mirror, dim=1).flatten(0, 1)


def mean_over_crops(logits: torch.Tensor, crops: int) -> torch.Tensor:
    """(N * crops, K) logits, image-major, to (N, K): the log of each image's mean softmax over its crops.

    The log keeps the evaluation unchanged: top-k of log p is top-k of p, and cross-entropy on it is
    -log of the averaged probability of the label (log_softmax of log p is log p when p sums to 1).
    With one crop the logits pass through untouched."""
    if crops == 1:
        return logits
    probs = logits.float().softmax(dim=-1)
    return probs.view(-1, crops, probs.shape[-1]).mean(dim=1).log()
