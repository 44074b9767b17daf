"""From a validated config to a finished run: build each part from its own subtree, resume, fit."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from .config import validate
from .data import Placement, build_loaders
from .engine import checkpoint as ckpt
from .engine.dist import World, init_world, shutdown
from .engine.logging import RunLog
from .engine.loop import FitOptions, Parts, Trainer
from .engine.precision import Precision, resolve
from .errors import EXIT_USER_ERROR, CheckpointError, ConfigError, UserError
from .models import build_model
from .models.complexity import measure
from .optim import build_optimizer
from .schedule import Schedule


def model_record(cfg: DictConfig, num_classes: int) -> dict:
    """The architecture as stored in checkpoints (a resume into another architecture is refused)."""
    rec = OmegaConf.to_container(cfg.model, resolve=True)
    rec.pop("init_from", None)
    rec["num_classes"] = num_classes
    return rec


def make_model(rec: dict, init_from: str | None, log) -> torch.nn.Module:
    try:
        model = build_model(rec)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    if init_from:
        from .models.finetune import init_from as load_init

        try:
            log(load_init(model, init_from))
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.init_from={init_from}: {e}") from None
    return model


def flat_hparams(cfg: DictConfig) -> dict:
    out = {}
    for group in ("model", "data", "optim", "schedule", "trainer"):
        for k, v in OmegaConf.to_container(cfg[group], resolve=True).items():
            out[f"{group}.{k}"] = v
    return out


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".config.", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, run_dir / "config.yaml")


def build(cfg: DictConfig, world: World, run_dir: Path) -> Trainer:
    """The Trainer of this run: each part built from its own config subtree, resumed from the run
    directory's checkpoint if there is one, its log open. User mistakes raise before anything is written."""
    t = cfg.trainer
    say = print if world.is_main else (lambda *_: None)
    precision: Precision = resolve(t.precision, t.channels_last, world.device)
    torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark)
    place = Placement(world.rank, world.world_size, world.device, precision.input_dtype,
                      precision.channels_last, t.seed)
    loaders = build_loaders(cfg.data, place, cfg.model.num_classes)
    classes = cfg.model.num_classes or loaders.num_classes
    if classes != loaders.num_classes:
        raise ConfigError(f"model.num_classes={classes} but the data set has {loaders.num_classes} classes "
                          f"(set model.num_classes={loaders.num_classes}, or 0 to take it from the data)")
    rec = model_record(cfg, classes)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = make_model(rec, cfg.model.init_from, say).to(world.device, memory_format=precision.memory_format)
    state = ckpt.load_latest(run_dir / "checkpoints", lambda m: print(m, file=sys.stderr))
    if state is not None and state.get("model_config") != rec:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: checkpoint is for model {state.get('model_config')}, "
                              f"this run builds {rec}; use another run directory (hydra.run.dir=...)")
    if t.sync_bn and world.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(cfg.optim, model, cfg.data.batch_size)
    steps = len(loaders.train) if not t.max_steps_per_epoch else min(len(loaders.train), t.max_steps_per_epoch)
    schedule = Schedule.from_config(cfg.schedule, steps, t.epochs)
    torch.manual_seed(t.seed * 1000 + world.rank)  # per-rank stream (dropout) unless a resume restores it
    wrapped = model
    if world.distributed:
        dev = [world.device.index] if world.device.type == "cuda" else None
        wrapped = DDP(model, device_ids=dev, gradient_as_bucket_view=True, static_graph=not t.compile)
    if t.compile:
        wrapped = torch.compile(wrapped)
    opts = FitOptions(
        epochs=t.epochs, eval_every=t.eval_every, log_every=t.log_every,
        checkpoint_every_minutes=t.checkpoint_every_minutes, label_smoothing=cfg.optim.label_smoothing,
        fail_on_nonfinite=t.fail_on_nonfinite, hparams=flat_hparams(cfg), model_config=rec)
    resume_step = state["progress"]["global_step"] if state else 0
    log = RunLog(run_dir, enabled=world.is_main, progress=t.progress, resume_step=resume_step)
    parts = Parts(wrapped, model, loaders, optimizer, schedule, precision)
    return Trainer(parts, world, run_dir, log, opts, resume=state)


def run(cfg: DictConfig, run_dir: Path) -> int:
    """Validate, build, resume if the run directory has a checkpoint, train; returns the exit code."""
    world = init_world(cfg.trainer.device)
    try:
        try:
            validate(cfg, world.world_size, torch.cuda.is_available())
            trainer = build(cfg, world, run_dir)
        except UserError as e:
            if world.is_main:
                print(f"error: {e}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        with contextlib.closing(trainer.log) as log:
            s = trainer.state
            if world.is_main:
                write_config(cfg, run_dir)
                cx = measure(lambda: build_model(trainer.o.model_config), cfg.data.image_size)
                p = trainer.precision
                log.record("start", world_size=world.world_size, device=world.device.type, precision=p.name,
                           channels_last=p.channels_last, params=cx.params, macs=cx.macs,
                           epochs=cfg.trainer.epochs, start_step=s.global_step)
                where = f"resuming at epoch {s.epoch + 1}, step {s.global_step}" if trainer.resumed else "starting"
                log.print(f"{cfg.name}: {where}; {cx.params / 1e6:.2f}M params, {cx.gflops:.2f} GFLOPs, "
                          f"{world.world_size} x {world.device.type}, {p.name}"
                          f"{', channels_last' if p.channels_last else ''}; run dir {run_dir}")
            try:
                return trainer.run().exit_code
            except UserError as e:  # e.g. an unreadable file met mid-epoch
                log.error(f"error: {e}")
                return EXIT_USER_ERROR
    finally:
        shutdown()
