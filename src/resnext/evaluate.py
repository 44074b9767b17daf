"""`python -m resnext.evaluate CHECKPOINT_OR_RUN_DIR [overrides]`: top-1/top-5 error on the val split.

    python -m resnext.evaluate outputs/resnext101_64x4d_imagenet data.val_resize=320 data.val_crop=320
    python -m resnext.evaluate resnext50.pth +recipe=resnext50_32x4d_imagenet data.root=/data/imagenet
    torchrun --nproc_per_node=8 -m resnext.evaluate outputs/resnext50_32x4d_imagenet

A run directory brings its config.yaml and checkpoints/best.pt (else last.pt); a weights file
(ours, torchvision's or timm's layout) takes its model from +recipe=NAME or model.* overrides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .compose import compose_config
from .config import validate
from .data import Placement, build_loaders
from .engine.dist import init_world, shutdown
from .engine.loop import evaluate
from .engine.precision import resolve
from .errors import EXIT_USER_ERROR, UserError, fail
from .loading import instantiate, open_source, typed_config


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if argv else EXIT_USER_ERROR)
    path, overrides = Path(argv[0]), argv[1:]
    world = init_world("auto" if not any(o.startswith("trainer.device=") for o in overrides) else
                       next(o.split("=", 1)[1] for o in overrides if o.startswith("trainer.device=")))
    try:
        src = open_source(path)
        cfg = typed_config(src.cfg, overrides) if src.cfg is not None else compose_config(overrides)
        weights = src.weights
        validate(cfg, world.world_size, torch.cuda.is_available())
        precision = resolve(cfg.trainer.precision, cfg.trainer.channels_last, world.device)
        place = Placement(world.rank, world.world_size, world.device, precision.input_dtype,
                          precision.channels_last, cfg.trainer.seed)
        loaders = build_loaders(cfg.data, place, cfg.model.num_classes)
        spec = src.stored or OmegaConf.to_container(cfg.model, resolve=True)
        if not spec.get("num_classes"):  # 0 = "from the data"
            spec = {**spec, "num_classes": cfg.model.num_classes or loaders.num_classes}
        model = instantiate(spec, src).to(world.device, memory_format=precision.memory_format)
        res = evaluate(model, loaders.val, precision)
    except UserError as e:
        shutdown()
        fail(str(e))
    if world.is_main:
        d = cfg.data
        print(f"{weights}: top-1 error {res['top1_err']:.2f}%, top-5 error {res['top5_err']:.2f}% on "
              f"{res['samples']} images ({d.val_crop}x{d.val_crop} center crop of shorter side {d.val_resize})")
        print(json.dumps({"weights": str(weights), **res, "val_crop": d.val_crop, "val_resize": d.val_resize}))
    shutdown()


if __name__ == "__main__":
    main()
