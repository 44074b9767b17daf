"""CIFAR networks of Table 7, ResNeXt-29 (C x d) and the Wide ResNet 28-10 baseline, and their configs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import Bottleneck, build_stages, check_shape, drop_path_rates, init_weights
from .family import ModelConfig
from .imagenet import shape_name


@dataclass
class CifarResNeXtConfig(ModelConfig):
    """model=cifar_resnext: ResNeXt-29 and the other 9n+2-layer CIFAR nets of Sec. 5.3."""

    arch: str = "cifar_resnext"
    num_classes: int = 10  # classifier outputs (CIFAR-10); must equal the data set's count; 0 = from the data
    depth: int = 29  # 9n + 2 (n blocks per stage): 11, 20, 29, ...
    cardinality: int = 16  # C, number of paths = groups of the 3x3 conv
    width: int = 64  # d, bottleneck width of one path in the first stage
    zero_init_last_bn: bool = False  # start every block's last BN gamma at 0
    shortcut: bool = True  # false: remove all shortcuts (the paper's residual ablation)
    zero_fc_bias: bool = False  # start the classifier's bias at 0 (the official code), else PyTorch's uniform init
    drop_path: float = 0.0  # stochastic depth: the last block's per-sample rate of dropping its residual branch in training, linear from 0 over the blocks; 0 = off


@dataclass
class WideResNetConfig(ModelConfig):
    """model=wrn: the Wide ResNet depth-k of Zagoruyko & Komodakis (Table 7's baseline)."""

    arch: str = "wrn"
    num_classes: int = 10  # classifier outputs (CIFAR-10); must equal the data set's count; 0 = from the data
    depth: int = 28  # 6n + 4 (n blocks per stage): 10, 16, 22, 28, ...
    widen_factor: int = 10  # k, width multiplier of the three stages (16k, 32k, 64k channels)
    dropout: float = 0.0  # dropout between the two convs of a wide block


def cifar_resnext_name(cfg: CifarResNeXtConfig) -> str:
    """ResNeXt-29 (16x64d), ResNet-29 (1x64d)[, no shortcut]."""
    name = shape_name("ResNeXt", cfg.depth, cfg.cardinality, cfg.width)
    return name if cfg.shortcut else name + ", no shortcut"


def wrn_name(cfg: WideResNetConfig) -> str:
    """WRN-28-10."""
    return f"WRN-{cfg.depth}-{cfg.widen_factor}"


class CifarResNeXt(nn.Module):
    """ResNeXt-29 for 32x32 inputs (paper Sec. 5.3): 3x3 conv 64, three stages of bottlenecks, pool, fc.

    Depth is 9n + 2 (n blocks per stage); 29 is the paper's. Base planes 64, 128, 256; stages 2 and 3
    halve the map in their first block's 3x3 conv. ``C=16, d=64`` is "ResNeXt-29 16x64d".
    """

    def __init__(
        self,
        depth: int = 29,
        cardinality: int = 16,
        width: int = 64,
        num_classes: int = 10,
        zero_init_last_bn: bool = False,
        shortcut: bool = True,
        zero_fc_bias: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9 != 0:
            raise ValueError(f"depth must be 9n + 2 with n >= 1 (11, 20, 29, 38, ...), got {depth!r}")
        check_shape(cardinality, width)
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)

        if not 0 <= drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")
        rates = iter(drop_path_rates(3 * n, drop_path))

        def block(in_ch: int, planes: int, stride: int, *_) -> nn.Module:
            return Bottleneck(in_ch, planes, stride, cardinality, width, shortcut, next(rates))

        in_ch = build_stages(self, 64, [(n, 64), (n, 128), (n, 256)], block)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_last_bn)
        if zero_fc_bias:  # models/resnext.lua: every nn.Linear's bias zeroed, its weight PyTorch's (Torch's) default
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class WideBasic(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3, plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.relu = nn.ReLU(inplace=False)
        self.out_channels = out_ch
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.drop(self.conv1(pre)))))
        return out + (x if self.downsample is None else self.downsample(pre))


class WideResNet(nn.Module):
    """Wide ResNet-depth-k (Zagoruyko & Komodakis 2016); 28-10 is the 36.5M-parameter baseline of Table 7."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth!r}")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"widen_factor must be an integer >= 1, got {widen_factor!r}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)

        def block(in_ch: int, planes: int, stride: int, *_) -> nn.Module:
            return WideBasic(in_ch, planes, stride, dropout)

        in_ch = build_stages(self, 16, [(n, 16 * widen_factor), (n, 32 * widen_factor), (n, 64 * widen_factor)],
                             block)
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_last_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))
