"""ImageNet ResNet-18/34 (He et al. 2016, two 3x3 convs per block), layer names as torchvision's, and its config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import add_imagenet_stem, build_stages, init_weights, projection
from .family import ModelConfig

STAGES: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
PLANES = (64, 128, 256, 512)  # channels of the four stages (a basic block does not expand them)


@dataclass
class ResNetConfig(ModelConfig):
    """model=resnet: the basic-block ImageNet ResNet-18/34 (ResNet-50 and deeper: model=resnext, C=1, d=64)."""

    arch: str = "resnet"
    depth: int = 18  # 18 or 34 (torchvision's stage depths); 50 and deeper are bottleneck nets: model=resnext
    zero_init_last_bn: bool = False  # start every block's second BN gamma at 0


def resnet_name(cfg: ResNetConfig) -> str:
    """ResNet-18, ResNet-34."""
    return f"ResNet-{cfg.depth}"


def torchvision_basic_resnet(depth: int = 18, num_classes: int = 1000, zero_init_last_bn: bool = False) -> nn.Module:
    """torchvision's ResNet-18/34 (a reference for checks and benchmarks)."""
    from torchvision.models.resnet import BasicBlock as TVBasicBlock
    from torchvision.models.resnet import ResNet as TVResNet

    if depth not in STAGES:
        raise ValueError(f"torchvision has no basic-block ResNet of depth {depth}")
    return TVResNet(TVBasicBlock, list(STAGES[depth]), num_classes=num_classes, zero_init_residual=zero_init_last_bn)


class BasicBlock(nn.Module):
    """3x3 conv (carries the stride) -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut, then ReLU.

    Parameter names follow torchvision's ``BasicBlock`` (conv1, bn1, conv2, bn2, downsample.0/1).
    """

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = planes
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_ch, planes, stride) if stride != 1 or in_ch != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ImageNet ResNet-18 or ResNet-34: a 7x7 stem, four stages of basic blocks, global pooling, a classifier.

    Args:
        depth: 18 or 34.
        num_classes: size of the classifier.
        zero_init_last_bn: start each block's second BN gamma at 0 (block = identity at init).
    """

    def __init__(self, depth: int = 18, num_classes: int = 1000, zero_init_last_bn: bool = False) -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"depth must be one of {sorted(STAGES)} for model=resnet, got {depth!r} "
                             "(ResNet-50 and deeper: model=resnext model.cardinality=1 model.width=64)")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        add_imagenet_stem(self)

        def block(in_ch: int, planes: int, stride: int, *_) -> nn.Module:
            return BasicBlock(in_ch, planes, stride)

        in_ch = build_stages(self, 64, list(zip(STAGES[depth], PLANES, strict=True)), block)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_last_bn=False)
        if zero_init_last_bn:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
