"""10-crop evaluation (resnext.crops): crop geometry on hand-made images, torchvision's ten_crop agrees, and
the model wrapper averages the softmax of the ten crops."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as F

from resnext.crops import TenCrop, crop_boxes, ten_crops


def positions(h: int, w: int, n: int = 1) -> torch.Tensor:
    """(n, 2, h, w) images whose channel 0 holds each pixel's row and channel 1 its column (+ 1000 x image)."""
    rows = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    return torch.stack([torch.stack([rows + 1000 * i, cols]) for i in range(n)])


@pytest.mark.parametrize("h,w,size", [(5, 7, 3), (8, 8, 4), (6, 9, 6), (4, 4, 4)])
def test_crops_are_centre_and_corners_then_mirrored(h, w, size):
    x = positions(h, w, n=2)
    crops = ten_crops(x, size)
    assert crops.shape == (10, 2, 2, size, size)
    centre = (round((h - size) / 2), round((w - size) / 2))
    tops_lefts = [centre, (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    assert crop_boxes(h, w, size) == tops_lefts
    for k, (top, left) in enumerate(tops_lefts):
        for i in range(2):
            c = crops[k, i]
            # the crop's top-left pixel is at (top, left) of image i, and it spans size rows and columns
            assert c[0, 0, 0] == 1000 * i + top and c[1, 0, 0] == left
            assert c[0, -1, 0] == 1000 * i + top + size - 1 and c[1, 0, -1] == left + size - 1
            # the mirrored crop k + 5 is crop k of the mirrored image: column j of it is column w - 1 - j
            m = crops[k + 5, i]
            assert m[1, 0, 0] == w - 1 - left and m[1, 0, -1] == w - size - left
            assert torch.equal(m[0], c[0])  # same rows
    # the mirrored corners come from the opposite side of the original: the TL crop of the mirror holds
    # the original's top-right columns, reversed
    assert torch.equal(crops[6], torch.flip(crops[2], dims=[3]))
    assert torch.equal(crops[8], torch.flip(crops[4], dims=[3]))


def test_odd_slack_mirrored_centre_sits_one_pixel_over():
    x = positions(3, 6, n=1)  # w - size = 3: centre left = round(1.5) = 2; in the mirror, also 2 -> original 1
    crops = ten_crops(x, 3)
    assert crops[0, 0, 1, 0].tolist() == [2, 3, 4]
    assert crops[5, 0, 1, 0].tolist() == [3, 2, 1]


@pytest.mark.parametrize("h,w,size", [(5, 7, 3), (8, 8, 4), (9, 6, 5), (10, 13, 7)])
def test_same_crops_as_torchvision_ten_crop(h, w, size):
    x = torch.randn(3, 3, h, w)
    ours = ten_crops(x, size)
    for i in range(3):
        tv = F.ten_crop(x[i], [size, size])  # tl, tr, bl, br, centre, then the same of the mirrored image
        order = [4, 0, 1, 2, 3]
        want = [tv[j] for j in order] + [tv[5 + j] for j in order]
        assert all(torch.equal(ours[k, i], want[k]) for k in range(10))


def test_too_large_a_crop_is_refused():
    with pytest.raises(ValueError, match="a 9x9 crop does not fit in a 8x10 image"):
        ten_crops(torch.zeros(1, 3, 8, 10), 9)


class Probe(torch.nn.Module):
    """A 'model' whose logits are a fixed function of the crop: its mean and its top-left pixel."""

    def forward(self, x):
        self.seen = x.shape
        return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0, 0, 0], -x[:, 1, -1, -1]], dim=1)


def test_model_wrapper_returns_log_of_mean_softmax():
    x = torch.randn(4, 2, 9, 11)
    probe = Probe()
    out = TenCrop(probe, 5)(x)
    assert probe.seen == (40, 2, 5, 5) and out.shape == (4, 3)
    crops = ten_crops(x, 5)
    want = torch.stack([Probe()(crops[k]).softmax(dim=1) for k in range(10)]).mean(dim=0)
    assert torch.allclose(out.exp(), want, atol=1e-6)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4))
    # cross-entropy on the output is -log of the averaged probability of the label
    y = torch.tensor([0, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(out, y)
    assert ce.item() == pytest.approx(-want[torch.arange(4), y].log().mean().item(), rel=1e-5)


def test_channels_last_input_stays_channels_last():
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    crops = TenCrop(Probe(), 6)
    seen = []
    crops.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    crops(x)
    crops(x.contiguous())
    assert seen == [True, False]
