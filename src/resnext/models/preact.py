"""Pre-activation ResNet (He et al. 2016, Identity Mappings) as fb.resnet.torch's preresnet.lua builds it.

Table 4's ResNet-200 row (21.7 / 5.8) is this network: fb.resnet.torch's pre-trained ResNet-200, "the full
pre-activation variant", 21.66 / 5.79 single 224 crop (its pretrained/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import add_imagenet_stem, build_stages, check_shape, group_width, init_weights
from .family import ModelConfig
from .imagenet import PLANES, STAGES, shape_name

PREACT = ("both", "residual", "none")  # where a block's input BN-ReLU goes (see PreActBottleneck)


@dataclass
class PreResNetConfig(ModelConfig):
    """model=preresnet: the pre-activation ResNet of fb.resnet.torch (Table 4's ResNet-200)."""

    arch: str = "preresnet"
    depth: int = 200  # 50, 101, 152 or 200 (the same stage depths as model=resnext)
    cardinality: int = 1  # C, groups of the 3x3 conv; 1 = ResNet (fb.resnet.torch has only C=1)
    width: int = 64  # d, bottleneck width of one path in the first stage (64 with C=1: ResNet)


def preresnet_name(cfg: PreResNetConfig) -> str:
    """Pre-act ResNet-200 (1x64d)."""
    return "Pre-act " + shape_name("ResNeXt", cfg.depth, cfg.cardinality, cfg.width)


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (grouped, carries the stride), BN-ReLU-conv1x1, plus the shortcut.

    ``preact`` says where the block's first BN-ReLU goes, as preresnet.lua's block types do:
    "residual" inside the residual path only (the shortcut is the identity of the raw input);
    "both" before the split, so the projection shortcut sees the activated input too (first block
    of stages 2-4, 'both_preact'); "none" not at all, the input being the stem's BN-ReLU-maxpool
    output (first block of stage 1, 'no_preact'). The projection is a bare 1x1 conv (type B, only
    where the shape changes); nothing follows the addition.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, cardinality: int = 1, width: int = 64,
                 preact: str = "residual") -> None:
        super().__init__()
        if preact not in PREACT:
            raise ValueError(f"preact must be one of {PREACT}, got {preact!r}")
        mid = group_width(planes, cardinality, width)
        self.out_channels = planes * self.expansion
        self.preact = preact
        self.bn1 = None if preact == "none" else nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, self.out_channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != self.out_channels:
            self.downsample = nn.Conv2d(in_ch, self.out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x if self.bn1 is None else self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        short = pre if self.preact == "both" else x
        return out + (short if self.downsample is None else self.downsample(short))


class PreResNet(nn.Module):
    """Pre-activation ResNet-{50,101,152,200} for ImageNet (fb.resnet.torch's preresnet.lua).

    Stem conv7x7/2-BN-ReLU-maxpool as the original ResNet; four stages of pre-activation
    bottlenecks (the first block of stages 2-4 halves the map in its 3x3 conv); a final BN-ReLU
    before global average pooling and the classifier. Layer names follow torchvision's ResNet
    (conv1, bn1, layer1-4, fc) plus ``bn``, the final BN.

    Args:
        depth: 50, 101, 152 or 200.
        cardinality: C, groups of the 3x3 conv (1: ResNet).
        width: d, bottleneck width of one path in the first stage.
        num_classes: size of the classifier.
    """

    def __init__(self, depth: int = 200, cardinality: int = 1, width: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"depth must be one of {sorted(STAGES)}, got {depth!r}")
        check_shape(cardinality, width)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        add_imagenet_stem(self)

        def block(in_ch: int, planes: int, stride: int, stage: int, index: int) -> nn.Module:
            preact = "residual" if index > 0 else "none" if stage == 0 else "both"
            return PreActBottleneck(in_ch, planes, stride, cardinality, width, preact)

        in_ch = build_stages(self, 64, list(zip(STAGES[depth], PLANES, strict=True)), block)
        self.bn = nn.BatchNorm2d(in_ch)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_last_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))
