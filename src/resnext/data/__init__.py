"""Data sources behind one call: build_loaders(cfg.data, placement) picks the source for the data set."""

from __future__ import annotations

from ..errors import DataError
from .base import Loader, Loaders, Placement

__all__ = ["DataError", "Loader", "Loaders", "Placement", "build_loaders", "normalization"]


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel, [0, 1] units, that images of ``dataset`` are normalized with: CIFAR-10's and
    CIFAR-100's own (the official code's), the digits', else ImageNet's (JPEG folders and synthetic data)."""
    from .cifar import DIGITS_MEAN, DIGITS_STD, STATS
    from .imagenet_folder import MEAN, STD

    return {**STATS, "digits": (DIGITS_MEAN, DIGITS_STD)}.get(str(dataset), (MEAN, STD))


def build_loaders(cfg, place: Placement, num_classes: int = 1000, holdout: list[str] | None = None,
                  known_good: dict | None = None) -> Loaders:
    """Loaders for ``cfg.dataset`` (the data config subtree); ``num_classes`` sizes synthetic labels;
    ``holdout``: the evaluation files a run held out of train/ (data.val_fraction), as it recorded them;
    ``known_good``: the training files a run's earlier check found good (data.prescan)."""
    if cfg.dataset == "synthetic" or cfg.backend == "synthetic":
        from .synthetic import build_synthetic

        return build_synthetic(cfg, place, num_classes or 1000)
    if cfg.dataset in ("cifar10", "cifar100", "digits"):
        from .cifar import build_memory

        return build_memory(cfg, place)
    from .imagenet import build_imagenet

    return build_imagenet(cfg, place, holdout, known_good)
