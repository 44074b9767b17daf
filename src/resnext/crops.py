"""Multi-crop evaluation: the ten crops of fb.resnet.torch's TenCrop, and a model averaging its softmax over them.

fb.resnet.torch (datasets/transforms.lua, TenCrop) takes, from the image resized so its shorter side is
256, the centre and the four corner crops of 224 x 224, each also mirrored; its train.lua sums the ten
outputs. Here the ten softmax outputs are averaged (the usual reading of "10-crop testing"; the top-1
of a sum of logits can differ). ``ten_crops`` takes a batch of equally sized images: the resized images
themselves where a loader can deliver them, or what it can deliver today (see resnext.evaluate).
"""

from __future__ import annotations

import torch
from torch import nn

CROPS = (1, 10)  # the evaluations resnext.evaluate offers: the single centre crop, or ten crops


def crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the centre, top-left, top-right, bottom-left and bottom-right ``size`` crops.

    The centre is rounded as torchvision's center_crop (and our loaders) round it: round((H - size) / 2);
    fb.resnet.torch rounds up, which differs only where H - size is odd.
    """
    if size > min(height, width):
        raise ValueError(f"a {size}x{size} crop does not fit in a {height}x{width} image")
    bottom, right = height - size, width - size
    centre = (int(round(bottom / 2.0)), int(round(right / 2.0)))
    return [centre, (0, 0), (0, right), (bottom, 0), (bottom, right)]


def ten_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """The ten crops of every image of an (N, C, H, W) batch as a (10, N, C, size, size) tensor: the five
    crops of ``crop_boxes`` of the images, then the same five of the horizontally mirrored images (as
    fb.resnet.torch and torchvision's ten_crop take them: where W - size is odd, the mirrored image's
    centre crop is not the mirror of the centre crop, it sits one pixel over)."""
    if images.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    boxes = crop_boxes(*images.shape[-2:], size)
    crops = [img[:, :, t:t + size, left:left + size] for img in (images, torch.flip(images, dims=[3]))
             for t, left in boxes]
    return torch.stack(crops)


class TenCrop(nn.Module):
    """``model`` applied to the ten ``size`` crops of each image; returns the log of the mean softmax.

    The log keeps the evaluation loop unchanged: top-k of log p is top-k of p, and cross-entropy on it is
    -log of the averaged probability of the label (log_softmax of log p is log p when p sums to 1).
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model, self.size = model, size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        crops = ten_crops(images, self.size)
        n = images.shape[0]
        fmt = torch.channels_last if images.is_contiguous(memory_format=torch.channels_last) and \
            not images.is_contiguous() else torch.contiguous_format
        logits = self.model(crops.flatten(0, 1).contiguous(memory_format=fmt))
        probs = logits.float().softmax(dim=-1).view(10, n, -1).mean(dim=0)
        return probs.log()
