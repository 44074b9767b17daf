"""ImageNet ResNeXt / ResNet (paper Table 1, Sec. 4), layer names as torchvision's ResNet."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Bottleneck, BottleneckA, BottleneckB

STAGES: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
FORMS = ("a", "b", "c")


def check_shape(cardinality: int, width: int) -> None:
    """Raise ValueError unless C and d are positive integers."""
    for name, value in (("cardinality", cardinality), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def init_weights(model: nn.Module, zero_init_last_bn: bool) -> None:
    """He (Kaiming, fan_out) init for convs, BN gamma 1 / beta 0; optionally gamma 0 on each block's last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_last_bn:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


def convert_form(model: nn.Module, form: str) -> nn.Module:
    """Replace every form-(c) bottleneck in ``model`` by the equivalent form (a) or (b), in place."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "c":
        return model
    cls = BottleneckA if form == "a" else BottleneckB
    for name, child in model.named_children():
        if isinstance(child, Bottleneck):
            setattr(model, name, cls(child))
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
    """

    def __init__(
        self,
        depth: int = 50,
        cardinality: int = 32,
        width: int = 4,
        num_classes: int = 1000,
        zero_init_last_bn: bool = False,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"depth must be one of {sorted(STAGES)}, got {depth!r}")
        check_shape(cardinality, width)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (blocks, planes) in enumerate(zip(STAGES[depth], (64, 128, 256, 512), strict=True)):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(Bottleneck(in_ch, planes, stride, cardinality, width, shortcut))
                in_ch = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_last_bn)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
