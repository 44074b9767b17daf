"""From a validated config to a finished run: build each part from its own subtree, resume, fit."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from .config import validate
from .data import Placement, build_loaders
from .engine import checkpoint as ckpt
from .engine.dist import World, all_reduce_max, env_world, init_world, shutdown
from .engine.hostmem import keep_freed_memory
from .engine.logging import RunLog
from .engine.loop import FitOptions, Parts, Trainer
from .engine.mix import Mixer
from .engine.precision import Precision
from .engine.rundir import INIT_ONLY, RunDir, RunLock, check_resume, refuse_links, write_text_atomic
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REQUEUE,
    EXIT_USER_ERROR,
    CheckpointError,
    ConfigError,
    UserError,
    printable,
)
from .footprint import check_sizes
from .models import build_model
from .models.complexity import measure_model
from .models.ghost_bn import convert_ghost_bn
from .optim import build_optimizer
from .plan import RunPlan
from .schedule import Schedule


def model_record(cfg: DictConfig, num_classes: int) -> dict:
    """The architecture as stored in checkpoints (a resume into another architecture is refused)."""
    rec = OmegaConf.to_container(cfg.model, resolve=True)
    rec.pop("init_from", None)
    rec.pop("bn_batch", None)  # how BN statistics are grouped in training: not the architecture
    rec.pop("bn_stats", None)
    rec["num_classes"] = num_classes
    return rec


def describe(cfg: DictConfig, class_names: list[str] | None) -> dict:
    """What a checkpoint says of the input its model expects, so that it predicts and evaluates alike when
    copied out of its run directory: the recipe's name, the resolved data config (sizes, resize and crop,
    filter, data set and so its normalisation) and the class names where the data has them."""
    return {"recipe": str(cfg.name), "data": OmegaConf.to_container(cfg.data, resolve=True),
            "class_names": list(class_names) if class_names else None}


def built_alike(saved: dict | None, rec: dict) -> bool:
    """Whether a checkpoint's model record is this run's network: equal but for the keys that only say how
    a network starts (rundir.INIT_ONLY), which an accepted change may alter."""
    def network(r: dict) -> dict:
        return {k: v for k, v in r.items() if f"model.{k}" not in INIT_ONLY}

    return isinstance(saved, dict) and network(saved) == network(rec)


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
    write_text_atomic(RunDir(run_dir).config, OmegaConf.to_yaml(cfg, resolve=True))


def load_state(run_dir: Path, world: World) -> tuple[dict | None, Path | None]:
    """(the run directory's latest loadable checkpoint, None for a new run; an unloadable last.pt it fell
    back from, for rank 0 to move aside once the start goes on)."""
    warn = (lambda m: print(m, file=sys.stderr, flush=True)) if world.is_main else (lambda m: None)
    return ckpt.load_latest(RunDir(run_dir).checkpoints, warn)


def set_aside(corrupt: Path | None, world: World) -> None:
    """Rank 0 renames the unloadable last.pt a start fell back from (the start goes on: it may change things)."""
    if corrupt is not None and world.is_main:
        print(f"  {corrupt.name} moved aside to {ckpt.move_aside(corrupt).name}", file=sys.stderr, flush=True)


def placement(cfg: DictConfig, world: World, precision: Precision, plan: RunPlan) -> Placement:
    """Where and how this rank's batches arrive: its share of each batch, device, input dtype and layout, and
    the order's rules the plan fixed (kept last batch, repeated augmentation over the step's BN groups)."""
    return Placement(world.rank, world.world_size, world.device, precision.input_dtype, precision.channels_last,
                     int(cfg.trainer.seed), plan.batch, plan.eval_batch, plan.last_batch_unit,
                     int(cfg.data.repeated_aug), plan.repeat_groups)


def build_parts(cfg: DictConfig, world: World, run_dir: Path, state: dict | None,
                plan: RunPlan, reset_optimizer: bool = False) -> tuple[Parts, FitOptions, RunPlan]:
    """Each part built from its own config subtree and the run's plan; user mistakes raise before anything is
    written. Returns the plan completed by the data (classes, steps per epoch)."""
    t = cfg.trainer
    say = print if world.is_main else (lambda *_: None)
    precision = Precision(plan.precision, world.device.type, plan.channels_last, float(t.loss_scale),
                          int(t.loss_scale_growth))
    torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark)
    place = placement(cfg, world, precision, plan)
    rd = RunDir(run_dir)
    loaders = build_loaders(cfg.data, place, cfg.model.num_classes, holdout=rd.holdout(), known_good=rd.known_good())
    plan = plan.with_data(cfg, loaders.num_classes, loaders.class_names, len(loaders.train))
    rec = model_record(cfg, plan.classes)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = make_model(rec, cfg.model.init_from, say).to(world.device, memory_format=precision.memory_format)
    if state is not None and not built_alike(state.get("model_config"), rec):
        raise CheckpointError(f"{rd.checkpoints}: checkpoint is for model {state.get('model_config')}, "
                              f"this run builds {rec}; use another run directory (hydra.run.dir=...)")
    d = cfg.data
    synthetic = d.dataset == "synthetic" or d.backend == "synthetic"
    keys = ("data.synthetic_size",) if synthetic else ("data.image_size", "data.val_resize")
    sizes = {f"{k}={OmegaConf.select(cfg, k)}": int(OmegaConf.select(cfg, k)) for k in keys}
    check_sizes(model, sizes, plan.micro_batch, precision.input_dtype, world.device)  # not the kernel's kill
    if cfg.model.get("bn_batch", 0):
        model = convert_ghost_bn(model, int(cfg.model.bn_batch), first_only=cfg.model.bn_stats == "first")
    if t.sync_bn and world.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(cfg.optim, model, cfg.data.batch_size)
    schedule = Schedule.from_config(cfg.schedule, plan.steps_per_epoch, t.epochs)
    torch.manual_seed(t.seed * 1000 + world.rank)  # per-rank stream (dropout) unless a resume restores it
    wrapped = model
    if world.distributed:
        dev = [world.device.index] if world.device.type == "cuda" else None
        # static_graph stays off: with no_sync() micro-batches (trainer.accumulate) it trips PyTorch's
        # reducer ("expect_autograd_hooks_ INTERNAL ASSERT FAILED", open since torch 2.1), and ResNeXt has
        # no unused parameters or re-entrant checkpointing for it to help with
        wrapped = DDP(model, device_ids=dev, gradient_as_bucket_view=True)
    if t.compile:
        wrapped = torch.compile(wrapped)
    opts = FitOptions(
        epochs=t.epochs, eval_every=t.eval_every, log_every=t.log_every,
        checkpoint_every_minutes=t.checkpoint_every_minutes, label_smoothing=cfg.optim.label_smoothing,
        fail_on_nonfinite=t.fail_on_nonfinite, hparams=flat_hparams(cfg), model_config=rec,
        described=describe(cfg, plan.class_names),
        clip_grad_norm=float(cfg.optim.get("clip_grad_norm", 0.0)), ema_decay=float(t.ema_decay),
        ema_every=int(t.ema_every), ema_warmup_steps=round(float(t.ema_warmup_epochs) * plan.steps_per_epoch),
        mixer=Mixer(float(cfg.data.mixup_alpha), float(cfg.data.cutmix_alpha), plan.classes, plan.bn_images, t.seed),
        seed=int(t.seed), reset_optimizer=reset_optimizer)
    return Parts(wrapped, model, loaders, optimizer, schedule, precision), opts, plan


def host_settings(plan: RunPlan) -> None:
    """This process's settings before any work: its intra-op threads, and on the CPU a malloc that keeps
    freed tensor memory for the next step (engine/hostmem.py)."""
    torch.set_num_threads(plan.threads)
    if plan.device == "cpu":
        keep_freed_memory()


def build(cfg: DictConfig, world: World, run_dir: Path) -> Trainer:
    """The Trainer of a run directory (resumed from its checkpoint if it has one), its log open on rank 0:
    the config validated and every part built as a train.py start builds them (benchmarks and tests use
    this; train.py adds the lock, the resume checks and the start line around the same build_parts)."""
    validate(cfg, world.world_size, torch.cuda.is_available())
    plan = RunPlan.of(cfg, world.world_size, world.device.type == "cuda")
    host_settings(plan)
    state, corrupt = load_state(run_dir, world)
    parts, opts, plan = build_parts(cfg, world, run_dir, state, plan)  # the plan completed by the data
    set_aside(corrupt, world)
    return trainer_of(parts, opts, plan, cfg, world, run_dir, state)


def trainer_of(parts: Parts, opts: FitOptions, plan: RunPlan, cfg: DictConfig, world: World, run_dir: Path,
               state: dict | None) -> Trainer:
    """The one way a Trainer is made (train.py's start and build alike): its log opened on rank 0 (appending
    after the checkpoint's step on a resume), the checkpoint's state restored."""
    log = RunLog(run_dir, enabled=world.is_main, progress=cfg.trainer.progress,
                 resume_step=state["progress"]["global_step"] if state else 0)
    return Trainer(parts, plan, world, run_dir, log, opts, resume=state)


def _lock(lock: RunLock, world: World) -> None:
    """Rank 0 takes the run directory's lock; every rank raises UserError if it could not."""
    error = ""
    if world.is_main:
        try:
            lock.acquire()
        except UserError as e:
            error = str(e)
    if all_reduce_max(torch.tensor(float(bool(error)), device=world.device)).item() > 0:  # sync
        raise UserError(error or "rank 0 could not lock the run directory")


def out_of_memory(e: BaseException, cfg: DictConfig, plan: RunPlan, world: World) -> UserError | None:
    """A failed allocation (CUDA OOM, or the CPU allocator's refusal) as one user-facing line, else None."""
    text = str(e)
    if not (isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text
            or "not enough memory" in text):
        return None
    d = cfg.data
    size = d.synthetic_size if d.dataset == "synthetic" or d.backend == "synthetic" else d.image_size
    first = text.strip().splitlines()[0][:160] if text.strip() else type(e).__name__
    return UserError(f"batch of {plan.batch} per process at {size}x{size} does not fit "
                     f"in {world.device.type} memory ({first}); lower data.batch_size")


#: What a collective raises when a peer process died (gloo's reset or closed connection, NCCL's aborts).
PEER_LOST = re.compile(r"Connection reset by peer|Connection closed by peer|remote process exited|"
                       r"NCCL communicator was aborted|ProcessGroupNCCL.*(?:abort|timeout)|Broken pipe", re.IGNORECASE)
EXIT_PEER_LOST = 1  # not this process's fault, not saved either: the run resumes from its last checkpoint


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def _remove_if_empty(run_dir: Path) -> None:
    """A rejected or interrupted start leaves no empty run directory behind (the lock creates it)."""
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only succeeds on an empty directory


def start_line(cfg: DictConfig, plan: RunPlan, trainer: Trainer, world: World, run_dir: Path, diff: dict,
               saved: DictConfig | None = None) -> None:
    """The start record and console line (rank 0)."""
    s, p, log = trainer.state, trainer.precision, trainer.log
    cx = measure_model(trainer.raw, cfg.data.image_size)  # the model built, not a second one
    log.record("start", world_size=world.world_size, device=world.device.type, precision=p.name,
               channels_last=p.channels_last, params=cx.params, macs=cx.macs, epochs=cfg.trainer.epochs,
               start_step=s.global_step, changes={k: list(v) for k, v in diff.items()})
    where = f"resuming at epoch {s.epoch + 1}, step {s.global_step}" if trainer.resumed else "starting"
    log.print(f"{cfg.name}: {where}; {cx.params / 1e6:.2f}M params, {cx.gflops:.2f} GFLOPs, "
              f"{world.world_size} x {world.device.type}, {p.name}"
              f"{', channels_last' if p.channels_last else ''}; {plan.describe()}; run dir {run_dir}")
    if trainer.written_by != world.world_size:
        log.print(f"  world size changed from {trainer.written_by} to {world.world_size} processes: the global "
                  f"batch, data order and augmentation go on unchanged ({plan.micro_batches} micro-batch(es) "
                  "per step); per-process random streams (dropout) start afresh")
    d = cfg.data
    folder = plan.folder  # JPEGs: resized, decoded by loader workers
    crops = f"center {d.val_crop} px" if d.eval_crops == 1 else f"{d.eval_crops} crops of {d.val_crop} px"
    sizes = (f"{d.image_size} px training crops, evaluation: shorter side {d.val_resize}, {crops}"
             if folder else f"{d.image_size} px" + ("" if d.eval_crops == 1 else f", evaluation: {crops}"))
    names = plan.class_names or ()
    shown = f" ({', '.join(printable(n) for n in names[:4])}{', ...' if len(names) > 4 else ''})" if names else ""
    log.print(f"  data: {d.dataset}, {plan.classes} classes{shown}, {sizes}; "
              f"{torch.get_num_threads()} CPU thread(s){f' and {d.workers} loader worker(s)' if folder else ''} "
              "per process")
    for key, (was, now) in diff.items():
        log.print(f"  changed since the last start: {key}: {was!r} -> {now!r}")
    if saved is not None and any(k == "trainer.epochs" or k.startswith("schedule.") for k in diff):
        log.print(lr_change(saved, cfg, plan.steps_per_epoch, s.global_step,
                            trainer.opt.param_groups[0].get("base_lr", cfg.optim.lr)))


def lr_change(saved: DictConfig, cfg: DictConfig, steps_per_epoch: int, step: int, base_lr: float) -> str:
    """What a changed run length or schedule does to the lr from the resumed step on (a cosine stretches)."""
    before = Schedule.from_config(saved.schedule, steps_per_epoch, int(saved.trainer.epochs))
    after = Schedule.from_config(cfg.schedule, steps_per_epoch, int(cfg.trainer.epochs))
    was, now = base_lr * before.factor(step), base_lr * after.factor(step)
    how = (f"the {cfg.schedule.name} schedule is laid over {cfg.trainer.epochs} epochs" if cfg.schedule.name == "cosine"
           else f"milestones {list(cfg.schedule.milestones)}")
    return (f"  lr at step {step}: {now:.4g} (it was {was:.4g} under the saved settings; {how}, "
            f"ending at {base_lr * after.factor(after.epochs * steps_per_epoch - 1):.4g})")


def _classes_pinned(saved: DictConfig, cfg: DictConfig, classes: int | None) -> tuple[DictConfig, DictConfig]:
    """The saved and the new config with model.num_classes 0 ("from the data") read as ``classes``, the count
    the run's checkpoint was built with: a run started with 10 resumes with 0 and vice versa (without a
    checkpoint, the two are compared as written)."""
    def pin(c: DictConfig) -> DictConfig:
        if classes is None or c.model.get("num_classes", 1):
            return c
        return OmegaConf.merge(c, {"model": {"num_classes": classes}})

    return pin(saved), pin(cfg)


def run(cfg: DictConfig, run_dir: Path) -> int:
    """Validate, lock, check a resume's settings, build, train; returns the exit code."""
    rank, _, world_size = env_world()
    cuda = torch.cuda.is_available()
    try:  # the config's one check, before any process group, thread setting or file
        validate(cfg, world_size, cuda)
        plan = RunPlan.of(cfg, world_size, cuda)  # every derived number of the run, from here on
    except UserError as e:
        if rank == 0:
            print(f"error: {printable(str(e))}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    world = init_world(plan.device)
    host_settings(plan)
    lock = RunLock(run_dir)
    try:
        return _run(cfg, run_dir, world, lock, plan)
    except KeyboardInterrupt:  # Ctrl-C before the trainer's handler was installed
        if world.is_main:
            print("error: interrupted before training started; nothing was saved", file=sys.stderr, flush=True)
            lock.release()
            _remove_if_empty(run_dir)  # a new run directory interrupted this early: not left behind
        return EXIT_INTERRUPTED
    finally:
        lock.release()
        shutdown()


def finished(cfg: DictConfig, state: dict | None, run_dir: Path, world: World) -> bool:
    """Whether the checkpoint has trained all of trainer.epochs (then rank 0 says so: nothing to do)."""
    if state is None or state["progress"]["epoch"] < cfg.trainer.epochs:
        return False
    if world.is_main:
        print(f"{cfg.name}: already finished ({state['progress']['epoch']} epochs) in {run_dir}; "
              "nothing to do (raise trainer.epochs to extend the run)", flush=True)
    return True


def _run(cfg: DictConfig, run_dir: Path, world: World, lock: RunLock, plan: RunPlan) -> int:
    try:
        if world.is_main:
            refuse_links(run_dir)  # before the lock file is opened
        try:
            _lock(lock, world)
        except UserError:  # a read-only run directory: fine for a finished run, which writes nothing
            state = load_state(run_dir, world)[0]
            if not finished(cfg, state, run_dir, world):
                raise
            return EXIT_OK
        saved = RunDir(run_dir).saved_config()
        state, corrupt = load_state(run_dir, world)
        # a resume is refused, or found finished, before any data is scanned or any model built
        classes = (state.get("model_config") or {}).get("num_classes") if state is not None else None
        worlds = (int(state.get("world_size", world.world_size)), world.world_size) if state is not None else None
        diff = check_resume(*_classes_pinned(saved, cfg, classes), list(cfg.trainer.accept_changes),
                            worlds) if saved is not None else {}
        if finished(cfg, state, run_dir, world):
            return EXIT_OK
        try:
            parts, opts, plan = build_parts(cfg, world, run_dir, state, plan,  # the model's errors come first
                                            reset_optimizer=any(k.startswith("optim.") for k in diff))
        except RuntimeError as e:
            raise out_of_memory(e, cfg, plan, world) or e from None
    except UserError as e:
        if world.is_main:
            print(f"error: {printable(str(e))}", file=sys.stderr, flush=True)
            lock.release()
            _remove_if_empty(run_dir)
        return EXIT_USER_ERROR
    if world.is_main:
        lock.claim()
    set_aside(corrupt, world)  # the start goes on: from here it may change the run directory
    trainer = trainer_of(parts, opts, plan, cfg, world, run_dir, state)
    log = trainer.log
    with contextlib.closing(log):
        if world.is_main:
            if diff and saved is not None:  # keep what the earlier steps were trained with
                write_text_atomic(RunDir(run_dir).config_at_step(trainer.state.global_step), OmegaConf.to_yaml(saved))
            if saved is None or diff:
                write_config(cfg, run_dir)
            if parts.loaders.holdout is not None:
                RunDir(run_dir).write_holdout(parts.loaders.holdout)
            if parts.loaders.known_good is not None:
                RunDir(run_dir).write_known_good(parts.loaders.known_good)
            start_line(cfg, plan, trainer, world, run_dir, diff, saved)
        try:
            code = trainer.run().exit_code
            if code in (EXIT_OK, EXIT_REQUEUE):  # ends every rank agreed on: leave the process group together
                shutdown(sync=True)  # (a rank tearing down gloo under a peer's last collective aborts the peer)
            return code
        except UserError as e:  # e.g. an unreadable file met mid-epoch
            log.error(f"error: {e}")
            return EXIT_USER_ERROR
        except RuntimeError as e:
            if world.distributed and PEER_LOST.search(str(e)):  # another process died: say so, not a traceback
                log.error(f"error: another process of this run stopped ({first_line(e)}); this one stops too; "
                          "the same command resumes from the last checkpoint")
                return EXIT_PEER_LOST
            oom = out_of_memory(e, cfg, plan, world)
            if oom is None:
                raise
            log.error(f"error: {oom}")
            log.record("end", status="failed", reason="out_of_memory", step=trainer.state.global_step)
            return EXIT_USER_ERROR
