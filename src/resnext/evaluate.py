"""`python -m resnext.evaluate RUN_DIR_OR_WEIGHTS [--checkpoint last|best] [--crops 1|10] [overrides]`: val error.

    python -m resnext.evaluate outputs/resnext101_64x4d_imagenet data.val_resize=320 data.val_crop=320
    python -m resnext.evaluate outputs/resnext50_32x4d_imagenet --checkpoint best
    python -m resnext.evaluate outputs/resnext50_32x4d_imagenet --crops 10 data.eval_batch_size=64
    python -m resnext.evaluate outputs/resnext50_32x4d_imagenet/checkpoints/last.prev.pt
    python -m resnext.evaluate resnext50.pth +recipe=resnext50_32x4d_imagenet data.root=/data/imagenet
    torchrun --nproc_per_node=8 -m resnext.evaluate outputs/resnext50_32x4d_imagenet

A run directory brings its config.yaml and its final model, checkpoints/last.pt (--checkpoint best:
best.pt, the epoch chosen on this very evaluation set, so an optimistic number). A file inside a run
directory (RUN/checkpoints/X.pt) brings that run's config.yaml too. Another weights file (ours,
torchvision's or timm's layout) takes its model from +recipe=NAME or model.* overrides.

--crops 10: the centre and four corner val_crop crops, each also mirrored, softmax averaged (resnext.crops;
fb.resnet.torch's TenCrop), counted exactly over ranks like the single crop. For ImageNet-style data the
crops are taken from the whole image resized to shorter side val_resize, as fb.resnet.torch takes them;
in-memory sets (CIFAR, digits) crop their stored images. Each batch runs ten times the images (lower
data.eval_batch_size if memory is short). Same as the override data.eval_crops=10.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .compose import compose_config
from .config import validate
from .crops import CROPS
from .data import build_loaders
from .engine.dist import init_world, shutdown
from .engine.precision import resolve
from .engine.rundir import RunDir
from .engine.step import evaluate
from .errors import OneLineParser, UserError, fail
from .loading import CHECKPOINTS, instantiate, open_source, typed_config
from .plan import RunPlan
from .session import placement


def parse(argv: list[str]) -> argparse.Namespace:
    ap = OneLineParser(prog="python -m resnext.evaluate", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="run directory, or a weights file (ours, torchvision's or timm's layout)")
    ap.add_argument("overrides", nargs="*", help="config overrides: key=value, +recipe=NAME")
    ap.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                    help="a run directory's checkpoint: last (the final model, default) or best "
                         "(the epoch with the lowest val error, chosen on this evaluation set)")
    ap.add_argument("--crops", type=int, choices=CROPS, default=1,
                    help="1: the val_crop centre crop (default); 10: centre + 4 corners, each mirrored")
    return ap.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    overrides = args.overrides
    device = next((o.split("=", 1)[1] for o in overrides if o.startswith("trainer.device=")), "auto")
    world = init_world(device)
    try:
        src = open_source(args.weights, args.checkpoint)
        cfg = typed_config(src.cfg, overrides) if src.cfg is not None else compose_config(overrides)
        weights = src.weights
        validate(cfg, world.world_size, torch.cuda.is_available())
        precision = resolve(cfg.trainer.precision, cfg.trainer.channels_last, world.device)
        plan = RunPlan.of(cfg, world.world_size, world.device.type == "cuda")
        place = placement(cfg, world, precision, plan)  # as training places its evaluation batches
        if args.crops != 1:  # the val loader delivers each image's crops; evaluate averages them
            cfg.data.eval_crops = args.crops
        run_dir = Path(args.weights)  # a run directory's held-out evaluation files (data.val_fraction), as recorded
        holdout = RunDir(run_dir).holdout() if run_dir.is_dir() else None
        loaders = build_loaders(cfg.data, place, cfg.model.num_classes, holdout=holdout)
        spec = src.stored or OmegaConf.to_container(cfg.model, resolve=True)
        if not spec.get("num_classes"):  # 0 = "from the data": the plan resolves it
            plan = plan.with_data(cfg, loaders.num_classes, loaders.class_names, len(loaders.train))
            spec = {**spec, "num_classes": plan.classes}
        model = instantiate(spec, src).to(world.device, memory_format=precision.memory_format)
        res = evaluate(model, loaders.val, precision)
    except UserError as e:
        shutdown()
        fail(str(e))
    if world.is_main:
        d = cfg.data
        how = (f"{d.val_crop}x{d.val_crop} center crop" if d.eval_crops == 1 else
               f"10 crops of {d.val_crop}x{d.val_crop}: centre, corners, mirrored")
        print(f"{weights}: top-1 error {res['top1_err']:.2f}%, top-5 error {res['top5_err']:.2f}% on "
              f"{res['samples']} images ({how} of shorter side {d.val_resize})")
        print(json.dumps({"weights": str(weights), **res, "val_crop": d.val_crop, "val_resize": d.val_resize,
                          "crops": d.eval_crops}))
    shutdown(sync=True)  # every rank got here: the last all-reduce is done everywhere


if __name__ == "__main__":
    main()
