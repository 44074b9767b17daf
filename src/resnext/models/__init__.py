"""Model family: constructors with plain arguments and a name -> builder table."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .blocks import Bottleneck, BottleneckA, BottleneckB
from .cifar import CifarResNeXt, WideResNet
from .imagenet import ResNeXt, convert_form

#: Network families by the name the config's ``model.arch`` uses.
FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "resnext": ResNeXt,  # ImageNet ResNeXt / ResNet (depth 50/101/152/200)
    "cifar_resnext": CifarResNeXt,  # ResNeXt-29 and other 9n+2 CIFAR nets
    "wrn": WideResNet,  # Wide ResNet depth-k (pre-activation)
}


def _imagenet(depth: int, c: int, d: int) -> Callable[..., nn.Module]:
    return partial(ResNeXt, depth=depth, cardinality=c, width=d)


def _cifar(c: int, d: int) -> Callable[..., nn.Module]:
    return partial(CifarResNeXt, depth=29, cardinality=c, width=d)


#: Named variants: name -> builder taking optional keyword overrides (num_classes, ...).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet50": _imagenet(50, 1, 64),
    "resnet101": _imagenet(101, 1, 64),
    "resnet152": _imagenet(152, 1, 64),
    "resnet200": _imagenet(200, 1, 64),
    "wide_resnet50_2": _imagenet(50, 1, 128),
    "wide_resnet101_2": _imagenet(101, 1, 128),
    "resnext50_2x40d": _imagenet(50, 2, 40),
    "resnext50_4x24d": _imagenet(50, 4, 24),
    "resnext50_8x14d": _imagenet(50, 8, 14),
    "resnext50_32x4d": _imagenet(50, 32, 4),
    "resnet101_1x100d": _imagenet(101, 1, 100),
    "resnext101_2x40d": _imagenet(101, 2, 40),
    "resnext101_4x24d": _imagenet(101, 4, 24),
    "resnext101_8x14d": _imagenet(101, 8, 14),
    "resnext101_2x64d": _imagenet(101, 2, 64),
    "resnext101_32x4d": _imagenet(101, 32, 4),
    "resnext101_64x4d": _imagenet(101, 64, 4),
    "resnext101_32x8d": _imagenet(101, 32, 8),
    "ig_resnext101_32x8d": _imagenet(101, 32, 8),
    "ig_resnext101_32x16d": _imagenet(101, 32, 16),
    "ig_resnext101_32x32d": _imagenet(101, 32, 32),
    "ig_resnext101_32x48d": _imagenet(101, 32, 48),
    "resnext29_8x64d": _cifar(8, 64),
    "resnext29_16x64d": _cifar(16, 64),
    "wrn28_10": partial(WideResNet, depth=28, widen_factor=10),
}


def create_model(name: str, **overrides) -> nn.Module:
    """Build the named variant; an unknown name raises ValueError listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name](**overrides)


def build_family(arch: str, **kwargs) -> nn.Module:
    """Build a network of family ``arch`` from plain keyword arguments."""
    if arch not in FAMILIES:
        raise ValueError(f"unknown model.arch {arch!r}; valid: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[arch](**kwargs)


__all__ = [
    "FAMILIES", "MODELS", "Bottleneck", "BottleneckA", "BottleneckB", "CifarResNeXt", "ResNeXt",
    "WideResNet", "build_family", "build_model", "convert_form", "create_model",
]


def build_model(cfg) -> nn.Module:
    """Build the network a model config subtree describes (any mapping with ModelConfig's keys).

    Only the keys that the family takes are passed on; ``init_from`` is applied by the caller.
    """
    arch = cfg["arch"]
    if arch == "wrn":
        kwargs = dict(depth=cfg["depth"], widen_factor=cfg["widen_factor"],
                      num_classes=cfg["num_classes"], dropout=cfg["dropout"])
    else:
        kwargs = dict(depth=cfg["depth"], cardinality=cfg["cardinality"], width=cfg["width"],
                      num_classes=cfg["num_classes"], zero_init_last_bn=cfg["zero_init_last_bn"],
                      shortcut=cfg["shortcut"])
    return build_family(arch, **kwargs)
