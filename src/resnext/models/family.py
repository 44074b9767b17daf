"""What a model family is: its typed config node, constructor, display name, input size and normalisation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn


@dataclass
class ModelConfig:
    """The keys every family's config node has; each family's dataclass adds its own after them."""

    arch: str = ""  # the family, named as in resnext.models.FAMILIES (conf/model/<arch>.yaml selects it)
    num_classes: int = 1000  # classifier outputs; must equal the data set's class count; 0 = from the data
    init_from: str | None = None  # weights to start from (ours, torchvision or timm layout): a file, a URL (http/https/file; cached in torch.hub's folder) or torchvision:NAME
    bn_batch: int = 0  # images per batch-norm statistic in training (the paper's 32); 0 = each process's batch
    bn_stats: str = "mean"  # BN running statistics with model.bn_batch: mean (of every group's, each pass) | first (the step's first group only: what the source's saved GPU-1 replica kept)


@dataclass(frozen=True)
class InputSpec:
    """The images a family is made for: size, and how a weights file's inputs are prepared.

    A run directory keeps its own data set's statistics and resize/crop; these are the defaults
    for a bare weights file (the model cards' preprocessing).
    """

    size: int  # side of the square input the network is made for
    crop_fraction: float  # center crop side / resized shorter side (the model cards' 0.875: 224 of 256)
    mean: tuple[float, float, float]  # per-channel RGB mean, [0, 1] units
    std: tuple[float, float, float]  # per-channel RGB standard deviation, [0, 1] units

    @property
    def resize(self) -> int:
        """The shorter side an image is resized to before the center crop."""
        return round(self.size / self.crop_fraction)


IMAGENET_INPUT = InputSpec(224, 0.875, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# CIFAR-10's statistics as the official ResNeXt code has them (0-255 scale: datasets/cifar10.lua); the data
# layer's resnext.data.cifar.CIFAR_MEAN/STD are the same numbers (a test holds them together)
CIFAR_INPUT = InputSpec(32, 1.0, tuple(v / 255 for v in (125.3, 123.0, 113.9)), tuple(v / 255 for v in (63.0, 62.1, 66.7)))

NOT_ARGUMENTS = ("arch", "init_from", "bn_batch", "bn_stats")  # config keys the constructor does not take (the caller's)


@dataclass(frozen=True)
class Family:
    """One network family, as every tool asks about it (an entry of ``resnext.models.FAMILIES``)."""

    build: Callable[..., nn.Module]  # constructor: takes the config's keys but arch and init_from as keywords
    config: type[ModelConfig]  # its typed config node: a dataclass with a one-line comment per key
    name: Callable[[Any], str]  # display name of one config (an instance of ``config``): "ResNeXt-50 (32x4d)"
    title: str  # the family in labels, without depth or shape: "ResNeXt"
    summary: str  # one line: what the family is and where it comes from
    input: InputSpec  # input size and normalisation the family is made for
    reference: Callable[..., nn.Module] | None = None  # torchvision's own definition of it (same keywords)

    def keys(self) -> list[str]:
        """The keys of the family's config node, in order."""
        return [f.name for f in fields(self.config)]

    def config_from(self, arch: str, values: Mapping[str, Any]) -> ModelConfig:
        """The typed config holding ``values``; a key the family lacks raises ValueError naming the valid keys."""
        keys, own = self.keys(), {}
        for k, v in values.items():
            if k in keys:
                own[k] = v
            else:
                raise ValueError(f"{k} is not a key of the {arch} family; valid keys: {', '.join(keys)}")
        return self.config(**{**own, "arch": arch})

    def arguments(self, cfg: ModelConfig) -> dict[str, Any]:
        """The constructor's keyword arguments for a config of this family."""
        return {k: v for k, v in asdict(cfg).items() if k not in NOT_ARGUMENTS}
