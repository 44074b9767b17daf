"""10-crop evaluation (resnext.crops): crop geometry on hand-made images, fb.resnet.torch's TenCrop transcribed agrees (torchvision's where the rounding does), DALI's
crop positions land on the same boxes, and evaluation averages the softmax of each image's ten crops."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as F
from imagenet_data_helpers import lua_ten_crop

from resnext.crops import crop_boxes, mean_over_crops, mirrored_boxes, ten_crops


def positions(h: int, w: int, n: int = 1) -> torch.Tensor:
    """(n, 2, h, w) images whose channel 0 holds each pixel's row and channel 1 its column (+ 1000 x image)."""
    rows = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    return torch.stack([torch.stack([rows + 1000 * i, cols]) for i in range(n)])


def crop_of(crops: torch.Tensor, image: int, k: int) -> torch.Tensor:
    """Crop k of image ``image`` from ten_crops' image-major (N * 10, ...) rows."""
    return crops[10 * image + k]


@pytest.mark.parametrize("h,w,size", [(5, 7, 3), (8, 8, 4), (6, 9, 6), (4, 4, 4)])
def test_crops_are_centre_and_corners_then_mirrored(h, w, size):
    x = positions(h, w, n=2)
    crops = ten_crops(x, size)
    assert crops.shape == (20, 2, size, size)
    centre = (math.ceil((h - size) / 2), math.ceil((w - size) / 2))  # fb.resnet.torch's CenterCrop
    tops_lefts = [centre, (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    assert crop_boxes(h, w, size) == tops_lefts
    for k, (top, left) in enumerate(tops_lefts):
        for i in range(2):
            c = crop_of(crops, i, k)
            # the crop's top-left pixel is at (top, left) of image i, and it spans size rows and columns
            assert c[0, 0, 0] == 1000 * i + top and c[1, 0, 0] == left
            assert c[0, -1, 0] == 1000 * i + top + size - 1 and c[1, 0, -1] == left + size - 1
            # the mirrored crop k + 5 is crop k of the mirrored image: column j of it is column w - 1 - j
            m = crop_of(crops, i, k + 5)
            assert m[1, 0, 0] == w - 1 - left and m[1, 0, -1] == w - size - left
            assert torch.equal(m[0], c[0])  # same rows
    # the mirrored corners come from the opposite side of the original: the TL crop of the mirror holds
    # the original's top-right columns, reversed
    assert torch.equal(crops[6], torch.flip(crops[2], dims=[2]))
    assert torch.equal(crops[8], torch.flip(crops[4], dims=[2]))
    assert mirrored_boxes(h, w, size) == [(t, w - size - left) for t, left in tops_lefts]


def test_odd_slack_mirrored_centre_sits_one_pixel_over():
    x = positions(3, 6, n=1)  # w - size = 3: centre left = round(1.5) = 2; in the mirror, also 2 -> original 1
    crops = ten_crops(x, 3)
    assert crops[0, 1, 0].tolist() == [2, 3, 4]
    assert crops[5, 1, 0].tolist() == [3, 2, 1]
    assert mirrored_boxes(3, 6, 3)[0] == (0, 1)


def torchvision_order(img: torch.Tensor, size: int) -> list[torch.Tensor]:
    """torchvision's ten_crop (tl, tr, bl, br, centre, then the same of the mirror) in our order."""
    tv = F.ten_crop(img, [size, size])
    order = [4, 0, 1, 2, 3]
    return [tv[j] for j in order] + [tv[5 + j] for j in order]


# slacks (H - size, W - size): even/even, odd/odd of both kinds (1 and 3 mod 4), zero
SHAPES = [(5, 7, 3), (8, 8, 4), (9, 6, 5), (10, 13, 7), (6, 9, 5), (7, 7, 6), (4, 4, 4), (261, 256, 224)]


@pytest.mark.parametrize("h,w,size", SHAPES)
def test_same_crops_as_fb_resnet_torch_ten_crop(h, w, size):
    x = torch.randn(3, 3, h, w)
    ours = ten_crops(x, size)
    for i in range(3):
        want = lua_ten_crop(x[i], size)
        assert all(torch.equal(crop_of(ours, i, k), want[k]) for k in range(10)), (h, w, size)


@pytest.mark.parametrize("h,w,size", SHAPES)
def test_torchvision_ten_crop_differs_only_in_the_centres_where_a_slack_is_1_mod_4(h, w, size):
    """torchvision rounds the centre half to even: where a slack is 1 mod 4 (1, 5, 37: 261 - 224) its
    centre crops sit a pixel to the left/top of fb.resnet.torch's; elsewhere all ten crops are equal."""
    x = torch.randn(1, 3, h, w)
    ours, tv = ten_crops(x, size), torchvision_order(x[0], size)
    centre_moves = (h - size) % 4 == 1 or (w - size) % 4 == 1
    same = [torch.equal(crop_of(ours, 0, k), tv[k]) for k in range(10)]
    assert same == [not centre_moves] + [True] * 4 + [not centre_moves] + [True] * 4


def test_too_large_a_crop_is_refused():
    with pytest.raises(ValueError, match="a 9x9 crop does not fit in a 8x10 image"):
        ten_crops(torch.zeros(1, 3, 8, 10), 9)


def test_dali_crop_positions_land_on_our_boxes():
    """DALI's crop anchor is round-half-up(crop_pos * (n - crop)) in float32: the positions resnext.data.dali
    gives the ten crops start where crop_boxes / mirrored_boxes say, for every slack up to 700 pixels."""
    import numpy as np

    from resnext.data.dali import ten_crop_centres, ten_crop_positions

    def anchor(pos, n, crop):
        return int(np.floor(np.float32(pos) * np.float32(n - crop) + np.float32(0.5)))

    crop = 5
    for n in range(crop, crop + 700):
        h, w = n, n + 3
        boxes = crop_boxes(h, w, crop) + mirrored_boxes(h, w, crop)
        pos = ten_crop_positions(*ten_crop_centres(w, h, crop))
        assert [m for _, _, m in pos] == [0] * 5 + [1] * 5
        got = [(anchor(y, h, crop), anchor(x, w, crop)) for x, y, _ in pos]
        assert got == boxes, n


def test_mean_over_crops_is_log_of_mean_softmax():
    logits = torch.randn(40, 3)
    out = mean_over_crops(logits, 10)
    assert out.shape == (4, 3)
    want = torch.stack([logits[10 * i:10 * i + 10].softmax(dim=1).mean(dim=0) for i in range(4)])
    assert torch.allclose(out.exp(), want, atol=1e-6)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4))
    # cross-entropy on the output is -log of the averaged probability of the label
    y = torch.tensor([0, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(out, y)
    assert ce.item() == pytest.approx(-want[torch.arange(4), y].log().mean().item(), rel=1e-5)
    assert mean_over_crops(logits, 1) is logits  # one crop: the logits as they are


def test_engine_evaluate_counts_each_image_once_from_ten_crop_loaders():
    """A ten-crop val loader (synthetic here) serves ten rows per label; the engine's evaluate averages them
    back to one prediction per image, so the sample count is the data set's, not ten times it."""
    from resnext.compose import compose_config
    from resnext.data import Placement, build_loaders
    from resnext.engine.precision import resolve
    from resnext.engine.step import evaluate

    cfg = compose_config(["data.dataset=synthetic", "data.synthetic_val=12", "data.synthetic_size=8",
                          "data.batch_size=4", "data.eval_crops=10"])
    place = Placement(0, 1, torch.device("cpu"), torch.float32, False, 0, 4, 4)  # data.batch_size=4 on 1 process
    val = build_loaders(cfg.data, place, 3).val
    assert val.crops == 10 and [tuple(x.shape) for x, _ in val][0] == (40, 3, 8, 8)
    seen = []

    class Mean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            seen.append(x.shape[0])
            return x.mean(dim=(1, 2, 3))[:, None] * self.w

    res = evaluate(Mean(), val, resolve("fp32", "false", torch.device("cpu")))
    assert res["samples"] == 12 and seen == [40, 40, 40]


def test_eval_crops_other_than_1_or_10_is_one_line():
    from resnext.compose import compose_config
    from resnext.config import validate
    from resnext.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^data.eval_crops=5 is not valid; choose one of 1, 10$"):
        validate(compose_config(["+recipe=resnext29_demo_digits", "data.eval_crops=5"]))


def test_in_memory_sets_crop_their_stored_images():
    """digits with data.eval_crops=10: each val batch is ten_crops of the single-crop batch (the whole
    16x16 images), labels once; a crop larger than the images is refused in one line."""
    from resnext.compose import compose_config
    from resnext.data import DataError, Placement, build_loaders

    base = ["+recipe=resnext29_demo_digits", "data.eval_batch_size=64"]
    place = Placement(0, 1, torch.device("cpu"), torch.float32, False, 0, 32, 64)  # the recipe's batch of 32
    one = build_loaders(compose_config(base).data, place).val
    ten = build_loaders(compose_config(base + ["data.eval_crops=10", "data.val_crop=12"]).data, place).val
    assert (one.crops, ten.crops) == (1, 10)
    for (x1, y1), (x10, y10) in zip(one, ten, strict=True):
        assert x1.shape[-2:] == (16, 16) and torch.equal(y1, y10)
        assert torch.equal(x10, ten_crops(x1, 12))
    with pytest.raises(DataError, match=r"^data.val_crop=20: ten crops of 20x20 do not fit in the 16x16 images; "
                                        r"choose data.val_crop <= 16$"):
        build_loaders(compose_config(base + ["data.eval_crops=10", "data.val_crop=20"]).data, place)
