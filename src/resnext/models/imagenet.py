"""ImageNet ResNeXt / ResNet (paper Table 1, Sec. 4), layer names as torchvision's ResNet, and its config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import (
    Bottleneck,
    BottleneckA,
    BottleneckB,
    add_imagenet_stem,
    build_stages,
    check_shape,
    drop_path_rates,
    init_weights,
)
from .family import ModelConfig

STAGES: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
PLANES = (64, 128, 256, 512)  # base planes of the four stages (block outputs are 4x)
FORMS = ("a", "b", "c")


@dataclass
class ResNeXtConfig(ModelConfig):
    """model=resnext: the ImageNet ResNeXt / ResNet of Tables 1-5."""

    arch: str = "resnext"
    depth: int = 50  # 50, 101, 152 or 200 (stage depths of Table 1 / torchvision)
    cardinality: int = 32  # C, number of paths = groups of the 3x3 conv; 1 = ResNet
    width: int = 4  # d, bottleneck width of one path in the first stage (64 with C=1: ResNet)
    zero_init_last_bn: bool = False  # start every block's last BN gamma at 0
    shortcut: bool = True  # false: remove all shortcuts (the paper's residual ablation)
    init_mode: str = "fan_out"  # Kaiming normal of the convs: fan_out (torchvision, Torch code) | fan_in (NVIDIA)
    drop_path: float = 0.0  # stochastic depth: the last block's per-sample rate of dropping its residual branch in training, linear from 0 over the blocks (timm's drop_path_rate); 0 = off


def shape_name(family: str, depth: int, cardinality: int, width: int) -> str:
    """ResNeXt-50 (32x4d), or ResNet-50 (1x64d) when there is one path."""
    return f"{'ResNet' if cardinality == 1 else family}-{depth} ({cardinality}x{width}d)"


def resnext_name(cfg: ResNeXtConfig) -> str:
    """The paper's way to name the network: ResNeXt-50 (32x4d), ResNet-50 (1x64d)[, no shortcut]."""
    name = shape_name("ResNeXt", cfg.depth, cfg.cardinality, cfg.width)
    return name if cfg.shortcut else name + ", no shortcut"


def torchvision_resnet(depth: int = 50, cardinality: int = 32, width: int = 4, num_classes: int = 1000,
                       zero_init_last_bn: bool = False, shortcut: bool = True, init_mode: str = "fan_out") -> nn.Module:
    """torchvision's ResNet definition of the same network (a reference for checks and benchmarks)."""
    from torchvision.models.resnet import Bottleneck as TVBottleneck
    from torchvision.models.resnet import ResNet as TVResNet

    if depth not in STAGES or not shortcut:
        raise ValueError(f"torchvision has no ResNet of depth {depth}{'' if shortcut else ' without shortcuts'}")
    net = TVResNet(TVBottleneck, list(STAGES[depth]), num_classes=num_classes, groups=cardinality,
                   width_per_group=width, zero_init_residual=zero_init_last_bn)
    if init_mode != "fan_out":  # torchvision's own init is fan_out
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=init_mode, nonlinearity="relu")
    return net


def convert_form(model: nn.Module, form: str) -> nn.Module:
    """Replace every form-(c) bottleneck in ``model`` by the equivalent form (a) or (b), in place; the new
    blocks hold the same values on the same device, in the same dtype and train/eval mode."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "c":
        return model
    cls = BottleneckA if form == "a" else BottleneckB
    for name, child in model.named_children():
        if isinstance(child, Bottleneck):
            setattr(model, name, cls(child).train(child.training))
        else:
            convert_form(child, form)
    return model


class ResNeXt(nn.Module):
    """ImageNet ResNeXt-{50,101,152,200} (C x d); C=1, d=64 is the original ResNet, C=1, d=128 Wide ResNet-50-2.

    Args:
        depth: 50, 101, 152 or 200.
        cardinality: C, the number of paths (groups of the 3x3 conv).
        width: d, the bottleneck width of one path in the first stage.
        num_classes: size of the classifier.
        zero_init_last_bn: start each block's last BN gamma at 0 (block = identity at init).
        shortcut: False drops every shortcut (the paper's residual ablation).
        init_mode: Kaiming normal mode of the convs, "fan_out" (torchvision, fb.resnet.torch) or "fan_in"
            (NVIDIA DeepLearningExamples' default ``--conv_init``).
        drop_path: stochastic depth rate of the last block, linear from 0 over the blocks (training only).
    """

    def __init__(
        self,
        depth: int = 50,
        cardinality: int = 32,
        width: int = 4,
        num_classes: int = 1000,
        zero_init_last_bn: bool = False,
        shortcut: bool = True,
        init_mode: str = "fan_out",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"depth must be one of {sorted(STAGES)}, got {depth!r}")
        check_shape(cardinality, width)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        add_imagenet_stem(self)

        if not 0 <= drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")
        rates = iter(drop_path_rates(sum(STAGES[depth]), drop_path))

        def block(in_ch: int, planes: int, stride: int, *_) -> nn.Module:
            return Bottleneck(in_ch, planes, stride, cardinality, width, shortcut, next(rates))

        in_ch = build_stages(self, 64, list(zip(STAGES[depth], PLANES, strict=True)), block)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_last_bn, init_mode)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
