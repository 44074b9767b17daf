"""ImageNet loaders: open the train/val ImageSources, then pick the backend (DALI on GPU or CPU, or torchvision)."""

from __future__ import annotations

import importlib.util

from ..errors import DataError
from .base import Loaders, Placement
from .imagenet_augment import interpolation
from .source import ImageSource

BACKENDS = ("dali_gpu", "dali_cpu", "torch")
# Resize filters every backend offers, for the training crop and the evaluation resize alike: PIL's and
# DALI's antialiased triangle (bilinear) and Keys cubic, a = -0.5 (bicubic). fb.resnet.torch resizes with
# bicubic (datasets/transforms.lua: Scale and RandomSizedCrop); torchvision's and NVIDIA's recipes with bilinear.
def _have_dali() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        return False


def pick_backend(backend: str, place: Placement) -> str:
    """auto: DALI decoding on the GPU when training on one, else DALI's CPU mode; torchvision where
    DALI is not installed (e.g. a platform without a DALI wheel)."""
    if backend == "auto":
        if not _have_dali():
            return "torch"
        return "dali_gpu" if place.device.type == "cuda" else "dali_cpu"
    if backend not in BACKENDS:
        raise DataError(f"data.backend={backend!r} cannot read ImageNet folders; choose auto, {', '.join(BACKENDS)}")
    if backend == "dali_gpu" and place.device.type != "cuda":
        raise DataError(f"data.backend=dali_gpu needs a CUDA training device (this run trains on {place.device}); "
                        "use dali_cpu or auto")
    if backend.startswith("dali") and not _have_dali():
        raise DataError(f"data.backend={backend} needs NVIDIA DALI (pip install nvidia-dali-cuda120); "
                        "or use data.backend=torch")
    return backend


def open_sources(cfg, holdout: list[str] | None = None) -> tuple[ImageSource, ImageSource]:
    """The train and val ImageSources of ``cfg.root``: today the JPEG folder layout (root/train/<class>,
    root/val/<class>, or ``cfg.file_list`` for train; without val/, ``cfg.val_fraction`` of train/ held out,
    ``holdout`` naming the files where a run recorded them). A packed format is recognised here and returns
    its own ImageSource pair; nothing after this point knows the storage format."""
    from .imagenet_folder import scan_root

    return scan_root(cfg.root, cfg.file_list, float(cfg.get("val_fraction", 0.0) or 0.0), holdout)


def held_out_files(val: ImageSource, cfg) -> list[str] | None:
    """The evaluation files held out of train/ (relative to data.root) when data.val_fraction chose them."""
    if not float(cfg.get("val_fraction", 0.0) or 0.0):
        return None
    import os

    return sorted(os.path.relpath(val.name(i), os.path.expanduser(cfg.root)) for i in range(len(val)))


def build_imagenet(cfg, place: Placement, holdout: list[str] | None = None,
                   known_good: dict | None = None) -> Loaders:
    """Loaders for an ImageNet-style data set: its sources (the training files checked first: data.prescan,
    ``known_good`` the files a run found good before), served by the chosen backend."""
    interpolation(cfg)  # fail before scanning the folders
    train, val = open_sources(cfg, holdout)
    checked = None
    if cfg.get("prescan", True) and hasattr(train, "files"):
        from .prescan import prescan

        # every rank checks (the others read what the first put in the page cache): no rank waits in a
        # collective while one reads, and a bad file ends every rank with the same line
        say = print if place.rank == 0 else (lambda *_: None)
        checked = prescan(list(train.files), max(8, int(cfg.workers)), known_good or {}, say)
    backend = pick_backend(cfg.backend, place)
    w = place.world_size
    batch, eval_batch = place.batch, place.eval_batch  # the plan's split of the global batches
    if batch < 1 or eval_batch < 1:
        raise DataError(f"data.batch_size={cfg.batch_size}, data.eval_batch_size={cfg.eval_batch_size}: "
                        f"each of the {w} ranks needs at least one image per batch")
    if len(train) < batch * w:
        raise DataError(f"{train.location}: {len(train)} images, fewer than one global batch "
                        f"(data.batch_size={cfg.batch_size})")
    if backend == "torch":
        from .imagenet_torch import TorchLoader

        loaders = TorchLoader(train, cfg, place, batch, True), TorchLoader(val, cfg, place, eval_batch, False)
    else:
        from .dali import DaliLoader

        gpu = backend == "dali_gpu"
        loaders = DaliLoader(train, cfg, place, batch, True, gpu), DaliLoader(val, cfg, place, eval_batch, False, gpu)
    return Loaders(*loaders, len(train.classes), len(train), len(val), list(train.classes),
                   held_out_files(val, cfg), checked)
