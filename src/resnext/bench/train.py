"""`bench train`: our engine's training step against a minimal hand-written loop, same model and batch."""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..models import FAMILIES, VARIANTS, build_model
from ..models.complexity import measure, saved_activation_bytes
from .common import environment, interleaved, paired_ratio, peak_flops, table


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnext50_32x4d", choices=sorted(VARIANTS), help="named model")
    p.add_argument("--batch", type=int, default=256, help="images per step")
    p.add_argument("--size", type=int, default=0, help="image side (default: the family's, 224 or CIFAR's 32)")
    p.add_argument("--classes", type=int, default=1000, help="classifier size")
    p.add_argument("--precision", default="auto",
                   help="comma list of fp32,bf16,fp16; auto = the trainer's default (bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--memory-format", default="channels_last", help="comma list of nchw,channels_last")
    p.add_argument("--compile", default="eager", help="comma list of eager,compile")
    p.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--with", dest="extra", default="",
                   help="also time our engine with these config overrides (space-separated, e.g. the methods "
                        "beyond the paper: 'data.mixup_alpha=0.2 trainer.ema_decay=0.999') against it without")
    p.add_argument("--bn-batch", type=int, default=0,
                   help="also time our engine with model.bn_batch=N (ghost BN) against plain BN at the same batch")


def model_overrides(name: str, classes: int) -> list[str]:
    """Config overrides describing the named model: its family's node and the variant's keys."""
    family, args = VARIANTS[name]
    return [f"model={family}", *(f"model.{k}={v}" for k, v in args.items()), f"model.num_classes={classes}"]


def reference_model(name: str, classes: int) -> nn.Module:
    """torchvision's definition of the same network where it has one (ImageNet ResNe(X)t), else ours."""
    family, args = VARIANTS[name]
    reference = FAMILIES[family].reference
    return reference(**args, num_classes=classes) if reference else build_model(name, num_classes=classes)


def build_engine(args, name: str, precision: str, channels_last: bool, compiled: bool, device: str, size: int,
                 bn_batch: int = 0, extra: tuple[str, ...] = ()):
    """Our Trainer over synthetic data, exactly as train.py builds it."""
    from ..compose import compose_config
    from ..engine.dist import init_world
    from ..session import build

    cfg = compose_config(model_overrides(name, args.classes) + [
        "data=synthetic", f"data.batch_size={args.batch}", f"data.synthetic_size={size}",
        f"data.synthetic_train={args.batch * args.steps}", f"data.synthetic_val={args.batch}",
        f"trainer.precision={precision}", f"trainer.channels_last={str(channels_last).lower()}",
        f"trainer.compile={str(compiled).lower()}", "trainer.progress=false", f"trainer.log_every={args.steps}",
        f"trainer.device={device}", f"trainer.max_steps_per_epoch={args.steps}", "trainer.epochs=1000",
        "schedule.milestones=[]", f"model.bn_batch={bn_batch}", *extra])
    world = init_world(device)
    fit = build(cfg, world, Path(tempfile.mkdtemp(prefix="bench-")))
    return fit


def reference_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, device: torch.device,
                   steps: int, lr: float):
    """What a user writes by hand: autocast, GradScaler, SGD with Nesterov momentum."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def run() -> int:
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return steps * x.shape[0]

    return run


def first_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """fp32 loss of a copy of the model on the batch (train-mode BN), before any update."""
    m = copy.deepcopy(model).float().train()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(m(x.float()), y))


def run_variant(args, precision: str, fmt: str, mode: str, device: str) -> dict:
    from ..engine.stop import StopFlag

    size = args.size or FAMILIES[VARIANTS[args.model].family].input.size
    cl, compiled = fmt == "channels_last", mode == "compile"
    fit = build_engine(args, args.model, precision, cl, compiled, device, size)
    dev = fit.world.device
    x, y = next(iter(fit.loaders.train))
    ref = reference_model(args.model, args.classes)
    ref.load_state_dict(fit.raw.state_dict())  # same weights: the same first loss
    ref = ref.to(dev, memory_format=torch.channels_last if cl else torch.contiguous_format)
    losses = (first_loss(fit.raw, x, y), first_loss(ref, x, y))
    ref_run = reference_loop(torch.compile(ref) if compiled else ref, x, y, precision, dev, args.steps,
                             fit.opt.param_groups[0]["lr"])
    stop = StopFlag()

    def epoch_of(trainer):
        def go() -> int:  # the images the trainer counted as stepped on, not the steps asked for
            trainer.state.step_in_epoch = 0
            before = trainer.images_trained
            trainer.train_epoch(stop)
            return trainer.images_trained - before
        return go

    timed = {"ours": epoch_of(fit), "reference": ref_run}
    memory = {}
    if args.bn_batch:
        ghost = build_engine(args, args.model, precision, cl, compiled, device, size, args.bn_batch)
        timed["ghost"] = epoch_of(ghost)
        for name, trainer in (("plain", fit), ("ghost", ghost)):  # what autograd keeps for backward
            memory[name] = saved_activation_bytes(trainer.raw, x, trainer.precision.autocast) / x.shape[0]
    extra = tuple(args.extra.split())
    if extra:
        timed["with"] = epoch_of(build_engine(args, args.model, precision, cl, compiled, device, size, 0, extra))
    res = interleaved(timed, dev, args.repeats)
    macs = measure(lambda: reference_model(args.model, args.classes), size).macs
    peak = peak_flops(dev, precision)
    row = {"model": args.model, "batch": args.batch, "size": size, "precision": precision, "format": fmt,
           "mode": mode, "ours_images_per_s": res["ours"]["images_per_s"],
           "ref_images_per_s": res["reference"]["images_per_s"],
           "ours_step_ms": 1000 * res["ours"]["seconds"] / args.steps,
           "ref_step_ms": 1000 * res["reference"]["seconds"] / args.steps,
           "ratio": paired_ratio(res, "ours", "reference"),
           "first_loss_ours": losses[0], "first_loss_ref": losses[1], "samples": res}
    if args.bn_batch:
        row["ghost_images_per_s"] = res["ghost"]["images_per_s"]
        row["ghost_vs_plain"] = paired_ratio(res, "ghost", "ours")
        row["plain_saved_mb_per_image"] = memory["plain"] / 1e6
        row["ghost_saved_mb_per_image"] = memory["ghost"] / 1e6
        row["ghost_memory_vs_plain"] = memory["ghost"] / memory["plain"]
    if extra:
        row["with"] = " ".join(extra)
        row["with_images_per_s"] = res["with"]["images_per_s"]
        row["with_vs_plain"] = paired_ratio(res, "with", "ours")
    if peak:
        row["mfu"] = res["ours"]["images_per_s"] * macs * 3 * 2 / peak
    return row


COLUMNS = [("model", "model", ""), ("batch", "batch", ""), ("precision", "precision", ""), ("format", "format", ""),
           ("mode", "mode", ""), ("ours_images_per_s", "ours img/s", ".1f"), ("ref_images_per_s", "reference img/s", ".1f"),
           ("ratio", "ours / ref", ".3f"), ("ours_step_ms", "ours ms/step", ".1f"), ("mfu", "MFU", ".1%"),
           ("ghost_vs_plain", "ghost BN / plain BN", ".3f"),
           ("ghost_memory_vs_plain", "ghost / plain saved activations", ".3f"),
           ("with_vs_plain", "with --with / without", ".3f")]


def run(args) -> dict:
    rows = []
    device = torch.device("cuda" if (args.device != "cpu" and torch.cuda.is_available()) else "cpu")
    chosen = [("bf16" if device.type == "cuda" else "fp32") if p == "auto" else p for p in args.precision.split(",")]
    bad = [p for p in chosen if p not in ("fp32", "bf16", "fp16")]
    if bad:
        raise UserError(f"--precision {bad[0]!r} is not valid; choose from auto, fp32, bf16, fp16 (comma list)")
    for precision in chosen:
        for fmt in args.memory_format.split(","):
            for mode in args.compile.split(","):
                rows.append(run_variant(args, precision, fmt, mode, args.device))
    return {"rows": rows, "settings": vars(args) | {"environment": environment(device)},
            "table": table(rows, COLUMNS)}
