"""ImageNet loaders: scan the folder once, then pick the backend (DALI on GPU or CPU, or torchvision)."""

from __future__ import annotations

from pathlib import Path

from .base import DataError, Loaders, Placement
from .imagenet_folder import scan_root

BACKENDS = ("dali_gpu", "dali_cpu", "torch")


def pick_backend(backend: str, place: Placement) -> str:
    """auto: DALI decoding on the GPU when training on one, else DALI's CPU mode."""
    if backend == "auto":
        return "dali_gpu" if place.device.type == "cuda" else "dali_cpu"
    if backend not in BACKENDS:
        raise DataError(f"data.backend={backend!r} cannot read ImageNet folders; choose auto, {', '.join(BACKENDS)}")
    return backend


def build_imagenet(cfg, place: Placement) -> Loaders:
    """Loaders for an ImageNet-layout folder (root/train/<class>, root/val/<class>)."""
    train, val = scan_root(cfg.root, cfg.file_list)
    backend = pick_backend(cfg.backend, place)
    w = place.world_size
    batch, eval_batch = cfg.batch_size // w, (cfg.eval_batch_size or cfg.batch_size) // w
    if len(train) < batch * w:
        raise DataError(f"{Path(cfg.root) / 'train'}: {len(train)} images, fewer than one global batch "
                        f"(data.batch_size={cfg.batch_size})")
    if backend == "torch":
        from .imagenet_torch import TorchLoader as Loader
    else:
        from .dali import DaliLoader as Loader
    return Loaders(Loader(train, cfg, place, batch, True), Loader(val, cfg, place, eval_batch, False),
                   len(train.classes), len(train), len(val))
