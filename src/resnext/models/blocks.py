"""What the families share: the ResNeXt bottleneck (Fig. 3 forms a, b, c), the stage builder, weight init."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn


def group_width(planes: int, cardinality: int, width: int) -> int:
    """Channels of the grouped 3x3 conv: C * floor(planes * d / 64) (paper, torchvision, Torch code)."""
    return cardinality * int(planes * width / 64)


def check_shape(cardinality: int, width: int) -> None:
    """Raise ValueError unless C and d are positive integers."""
    for name, value in (("cardinality", cardinality), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def build_stages(net: nn.Module, in_ch: int, plan: Sequence[tuple[int, int]],
                 make_block: Callable[[int, int, int, int, int], nn.Module]) -> int:
    """Add ``net.layer1`` ... ``net.layerN``, stage i holding ``plan[i] = (blocks, planes)`` blocks.

    ``make_block(in_ch, planes, stride, stage, index)`` builds one block, which says its
    ``out_channels``; the first block of every stage but the first halves the map (stride 2).
    Returns the channels the last stage puts out.
    """
    for s, (blocks, planes) in enumerate(plan):
        layers = []
        for b in range(blocks):
            layers.append(make_block(in_ch, planes, 2 if (s > 0 and b == 0) else 1, s, b))
            in_ch = layers[-1].out_channels
        setattr(net, f"layer{s + 1}", nn.Sequential(*layers))
    return in_ch


def drop_branch(out: torch.Tensor, rate: float, draws: torch.Tensor | None = None) -> torch.Tensor:
    """Stochastic depth on a residual branch, per sample: dropped with probability ``rate``, kept ones scaled
    by 1 / (1 - rate). ``draws`` (one uniform in [0, 1) per sample, set by ``drawn_drops``) keeps the samples
    whose draw is >= rate; without them, torchvision.ops.stochastic_depth's "row" mode draws from torch's
    generator (imported here, not at the top: torchvision costs a second of start-up to every command that
    lists the models)."""
    if draws is not None:
        keep = (draws >= rate).to(out.dtype).div_(1.0 - rate)
        return out * keep.view(-1, *([1] * (out.dim() - 1)))
    from torchvision.ops import stochastic_depth

    return stochastic_depth(out, rate, "row", training=True)


def dropping_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of ``model`` (DDP or compiled wrappers included) with a drop rate, in order."""
    return [m for m in model.modules() if getattr(m, "drop_path", 0) > 0]


@contextlib.contextmanager
def drawn_drops(blocks: list[nn.Module], draws: torch.Tensor | None):
    """Within the block, block j of ``blocks`` keeps sample i's branch where ``draws[i, j]`` >= its rate
    (None: torch's generator draws, as a model used alone does)."""
    if draws is None:
        yield
        return
    for j, block in enumerate(blocks):
        block.drop_draws = draws[:, j]
    try:
        yield
    finally:
        for block in blocks:
            block.drop_draws = None


def drop_path_rates(blocks: int, rate: float) -> list[float]:
    """Stochastic depth's per-block rates: linear from 0 at the first block to ``rate`` at the last, as timm's
    ResNet spreads drop_path_rate (rate x index / (blocks - 1))."""
    return [rate * i / max(blocks - 1, 1) for i in range(blocks)]


def add_imagenet_stem(net: nn.Module) -> None:
    """The ImageNet stem every family shares: 7x7/2 conv to 64 channels, BN, ReLU, 3x3/2 max pool
    (torchvision's names: conv1, bn1, relu, maxpool)."""
    net.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(64)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(3, stride=2, padding=1)


def projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Type-B projection shortcut: 1x1 conv + BN (used only where the shape changes)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class Bottleneck(nn.Module):
    """Form (c): 1x1 -> 3x3 grouped (groups = C, carries the stride) -> 1x1, BN after each conv.

    Parameter names follow torchvision's ``Bottleneck`` so that state dicts are interchangeable.
    With ``shortcut=False`` the block returns ReLU(transformation) alone (the paper's ablation). With
    ``drop_path`` > 0 (stochastic depth, training only) each sample's residual branch is dropped with that
    probability and kept ones scaled by 1 / (1 - drop_path) (torchvision.ops.stochastic_depth, "row").
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        cardinality: int = 1,
        width: int = 64,
        shortcut: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        mid = group_width(planes, cardinality, width)
        self.drop_path = drop_path
        self.drop_draws: torch.Tensor | None = None  # per-sample uniforms for the next forward (drawn_drops)
        out_ch = planes * self.expansion
        self.out_channels = out_ch
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut
        needs_proj = shortcut and (stride != 1 or in_ch != out_ch)
        self.downsample = projection(in_ch, out_ch, stride) if needs_proj else None
        self.cardinality = cardinality

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.transform(x)
        if self.shortcut:
            if self.drop_path > 0 and self.training:
                out = drop_branch(out, self.drop_path, self.drop_draws)
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


INIT_MODES = ("fan_out", "fan_in")  # Kaiming normal: std sqrt(2 / fan) over the conv's outputs or inputs


def init_weights(model: nn.Module, zero_init_last_bn: bool, mode: str = "fan_out") -> None:
    """He (Kaiming normal, ``mode`` fan_out or fan_in) init for convs, BN gamma 1 / beta 0; optionally
    gamma 0 on each block's last BN. fan_out: torchvision and fb.resnet.torch; fan_in: NVIDIA's code."""
    if mode not in INIT_MODES:
        raise ValueError(f"init_mode must be one of {', '.join(INIT_MODES)}, got {mode!r}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_meta:  # a meta tensor has no values to draw, and
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")  # its normal_ imports dynamo (0.85 s)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_last_bn:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


def _slice_bn(src: nn.BatchNorm2d, lo: int, hi: int) -> nn.BatchNorm2d:
    """A BatchNorm holding channels [lo, hi) of ``src`` (weights and running statistics), on its device
    and in its dtype (nothing is rounded through float32)."""
    bn = nn.BatchNorm2d(hi - lo, eps=src.eps, momentum=src.momentum, device=src.weight.device,
                        dtype=src.weight.dtype)
    with torch.no_grad():
        bn.weight.copy_(src.weight[lo:hi])
        bn.bias.copy_(src.bias[lo:hi])
        bn.running_mean.copy_(src.running_mean[lo:hi])
        bn.running_var.copy_(src.running_var[lo:hi])
        bn.num_batches_tracked.copy_(src.num_batches_tracked)
    return bn


def _slice_conv(src: nn.Conv2d, out_lo: int, out_hi: int, in_lo: int | None = None,
                in_hi: int | None = None, groups_in: bool = False) -> nn.Conv2d:
    """A dense conv holding output channels [out_lo, out_hi) (and optionally input channels) of ``src``,
    on its device and in its dtype."""
    w = src.weight[out_lo:out_hi]
    if not groups_in and in_lo is not None:
        w = w[:, in_lo:in_hi]
    conv = nn.Conv2d(w.shape[1], w.shape[0], src.kernel_size, stride=src.stride,
                     padding=src.padding, bias=False, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
    return conv


class _Path(nn.Sequential):
    """One of the C low-dimensional paths: 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU (d channels)."""


def _paths_from(block: Bottleneck) -> nn.ModuleList:
    """Split the first two layers of a form-(c) block into its C paths, sharing its weights."""
    mid = block.conv2.out_channels
    d = mid // block.cardinality
    paths = []
    for i in range(block.cardinality):
        lo, hi = i * d, (i + 1) * d
        paths.append(_Path(
            _slice_conv(block.conv1, lo, hi),
            _slice_bn(block.bn1, lo, hi),
            nn.ReLU(inplace=True),
            # grouped conv: output channels [lo, hi) see only input channels [lo, hi), already d wide
            _slice_conv(block.conv2, lo, hi, groups_in=True),
            _slice_bn(block.bn2, lo, hi),
            nn.ReLU(inplace=True),
        ))
    return nn.ModuleList(paths)


class _SplitBlock(nn.Module):
    """Shared shell of forms (a) and (b): C paths, an aggregation, BN, shortcut, ReLU."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.paths = _paths_from(block)
        self.bn3 = _slice_bn(block.bn3, 0, block.bn3.num_features)
        self.shortcut = block.shortcut
        self.drop_path = block.drop_path
        self.drop_draws: torch.Tensor | None = None
        self.downsample = None
        if block.downsample is not None:
            conv, bn = block.downsample
            self.downsample = nn.Sequential(_slice_conv(conv, 0, conv.out_channels),
                                            _slice_bn(bn, 0, bn.num_features))
        self.relu = nn.ReLU(inplace=True)

    def aggregate(self, outs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.aggregate([p(x) for p in self.paths]))
        if self.shortcut:
            if self.drop_path > 0 and self.training:
                out = drop_branch(out, self.drop_path, self.drop_draws)
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class BottleneckA(_SplitBlock):
    """Form (a): each path ends in its own 1x1 conv to the block's output width; outputs are summed."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__(block)
        d = block.conv2.out_channels // block.cardinality
        out_ch = block.conv3.out_channels
        self.ends = nn.ModuleList(
            _slice_conv(block.conv3, 0, out_ch, i * d, (i + 1) * d) for i in range(block.cardinality)
        )

    def aggregate(self, outs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([end(o) for end, o in zip(self.ends, outs, strict=True)]).sum(0)


class BottleneckB(_SplitBlock):
    """Form (b): the paths' outputs are concatenated, then one 1x1 conv maps them to the output width."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__(block)
        self.conv3 = _slice_conv(block.conv3, 0, block.conv3.out_channels)

    def aggregate(self, outs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv3(torch.cat(outs, dim=1))
