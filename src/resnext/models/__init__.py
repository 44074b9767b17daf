"""The model families (one table), their named variants (data), and the one function that builds a model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import nn

from .basic import ResNet, ResNetConfig, resnet_name, torchvision_basic_resnet
from .blocks import Bottleneck, BottleneckA, BottleneckB
from .cifar import (
    CifarResNeXt,
    CifarResNeXtConfig,
    WideResNet,
    WideResNetConfig,
    cifar_resnext_name,
    wrn_name,
)
from .family import CIFAR_INPUT, IMAGENET_INPUT, Family, InputSpec, ModelConfig
from .imagenet import ResNeXt, ResNeXtConfig, convert_form, resnext_name, torchvision_resnet
from .preact import PreResNet, PreResNetConfig, preresnet_name

#: Every network family, by the name its config's ``arch`` key (and conf/model/<name>.yaml) uses.
FAMILIES: dict[str, Family] = {
    "resnext": Family(ResNeXt, ResNeXtConfig, resnext_name, "ResNeXt",
                      "ImageNet ResNeXt / ResNet, depth 50-200 (paper Tables 1-5)", IMAGENET_INPUT,
                      reference=torchvision_resnet),
    "cifar_resnext": Family(CifarResNeXt, CifarResNeXtConfig, cifar_resnext_name, "ResNeXt",
                            "CIFAR ResNeXt-29 and other 9n+2-layer nets (Sec. 5.3, Table 7)", CIFAR_INPUT),
    "wrn": Family(WideResNet, WideResNetConfig, wrn_name, "WRN",
                  "Wide ResNet depth-k, pre-activation (Table 7's baseline)", CIFAR_INPUT),
    "preresnet": Family(PreResNet, PreResNetConfig, preresnet_name, "Pre-act ResNet",
                        "ImageNet pre-activation ResNet of fb.resnet.torch (Table 4's ResNet-200)", IMAGENET_INPUT),
    "resnet": Family(ResNet, ResNetConfig, resnet_name, "ResNet",
                     "ImageNet ResNet-18/34, basic blocks (torchvision's resnet18/34)", IMAGENET_INPUT,
                     reference=torchvision_basic_resnet),
}


class Variant(NamedTuple):
    """A named network: a family and the config keys that make it (the rest at the family's defaults)."""

    family: str  # a key of FAMILIES
    args: dict[str, Any]  # config keys of that family


def _x(depth: int, cardinality: int, width: int) -> Variant:
    return Variant("resnext", {"depth": depth, "cardinality": cardinality, "width": width})


#: Named variants (torch.hub entry points, --arch of the inference tools).
VARIANTS: dict[str, Variant] = {
    "resnet18": Variant("resnet", {"depth": 18}),
    "resnet34": Variant("resnet", {"depth": 34}),
    "resnet50": _x(50, 1, 64),
    "resnet101": _x(101, 1, 64),
    "resnet152": _x(152, 1, 64),
    "resnet200": _x(200, 1, 64),
    "wide_resnet50_2": _x(50, 1, 128),
    "wide_resnet101_2": _x(101, 1, 128),
    "resnext50_2x40d": _x(50, 2, 40),
    "resnext50_4x24d": _x(50, 4, 24),
    "resnext50_8x14d": _x(50, 8, 14),
    "resnext50_32x4d": _x(50, 32, 4),
    "resnet101_1x100d": _x(101, 1, 100),
    "resnext101_2x40d": _x(101, 2, 40),
    "resnext101_4x24d": _x(101, 4, 24),
    "resnext101_8x14d": _x(101, 8, 14),
    "resnext101_2x64d": _x(101, 2, 64),
    "resnext101_32x4d": _x(101, 32, 4),
    "resnext101_64x4d": _x(101, 64, 4),
    "resnext101_32x8d": _x(101, 32, 8),
    "ig_resnext101_32x8d": _x(101, 32, 8),
    "ig_resnext101_32x16d": _x(101, 32, 16),
    "ig_resnext101_32x32d": _x(101, 32, 32),
    "ig_resnext101_32x48d": _x(101, 32, 48),
    "resnext29_8x64d": Variant("cifar_resnext", {"depth": 29, "cardinality": 8, "width": 64}),
    "resnext29_16x64d": Variant("cifar_resnext", {"depth": 29, "cardinality": 16, "width": 64}),
    "wrn28_10": Variant("wrn", {"depth": 28, "widen_factor": 10}),
    "preresnet50": Variant("preresnet", {"depth": 50}),
    "preresnet101": Variant("preresnet", {"depth": 101}),
    "preresnet152": Variant("preresnet", {"depth": 152}),
    "preresnet200": Variant("preresnet", {"depth": 200}),
}


def _unknown(name: object, in_mapping: bool) -> ValueError:
    what = f"arch={name!r} is not a model family or variant" if in_mapping else f"unknown model {name!r}"
    return ValueError(f"{what}; valid families: {', '.join(sorted(FAMILIES))}; "
                      f"valid variants: {', '.join(sorted(VARIANTS))}")


def resolve(spec: str | Mapping[str, Any], **kwargs: Any) -> tuple[Family, ModelConfig]:
    """The family and typed config a name or a config mapping describes.

    ``spec`` is a family name, a variant name, or a mapping whose ``arch`` is either, holding that
    family's config keys (a run's ``model`` node, a checkpoint's ``model_config``); ``kwargs``
    override keys. An unknown name or a key the family lacks raises ValueError naming the valid ones.
    """
    if isinstance(spec, str):
        name, values = spec, {}
    elif isinstance(spec, Mapping):
        name, values = spec.get("arch"), {k: v for k, v in spec.items() if k != "arch"}
    else:
        raise TypeError(f"a model is a name or a config mapping, not {type(spec).__name__}")
    if isinstance(name, str) and name in VARIANTS:
        arch, values = VARIANTS[name].family, {**VARIANTS[name].args, **values}
    elif isinstance(name, str) and name in FAMILIES:
        arch = name
    else:
        raise _unknown(name, not isinstance(spec, str))
    family = FAMILIES[arch]
    return family, family.config_from(arch, {**values, **kwargs})


def build_model(spec: str | Mapping[str, Any], **kwargs: Any) -> nn.Module:
    """Build the network a family or variant name (with keyword overrides) or a config mapping describes.

    ``build_model("resnext50_32x4d", num_classes=10)``, ``build_model("wrn", depth=16)``,
    ``build_model(cfg.model)``. ``init_from`` is not applied here (the caller's job). Bad names and
    keys, and impossible shapes, raise ValueError.
    """
    family, cfg = resolve(spec, **kwargs)
    return family.build(**family.arguments(cfg))


def family_of(spec: str | Mapping[str, Any]) -> Family:
    """The family entry of a name or a config mapping (ValueError for an unknown one)."""
    return resolve(spec)[0]


def describe(spec: str | Mapping[str, Any]) -> str:
    """The display name of a name or a config mapping: "ResNeXt-50 (32x4d)", "WRN-28-10"."""
    family, cfg = resolve(spec)
    return family.name(cfg)


__all__ = [
    "FAMILIES", "VARIANTS", "Bottleneck", "BottleneckA", "BottleneckB", "CifarResNeXt", "Family", "InputSpec",
    "ModelConfig", "PreResNet", "ResNet", "ResNeXt", "Variant", "WideResNet", "build_model", "convert_form", "describe",
    "family_of", "resolve",
]
