"""The training loop: the Trainer's epochs (steps and evaluation from engine.step), saves, stops and logs."""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..data.base import Loaders
from ..errors import EXIT_NONFINITE, EXIT_OK, EXIT_REQUEUE, EXIT_SAVE_FAILED, SaveError
from ..models.blocks import dropping_blocks
from ..models.ghost_bn import groups_of_a_partial_batch
from ..optim import prime_momentum
from ..plan import RunPlan
from ..schedule import Schedule
from . import checkpoint as ckpt
from .depth import DepthDraws
from .dist import World, all_reduce_max
from .ema import WeightEMA
from .logging import RunLog
from .metrics import Meter
from .mix import Mixer
from .precision import Precision
from .rundir import RunDir
from .step import evaluate, train_step
from .stop import StopFlag


class Outcome(enum.Enum):
    """How a run (or one start of it) ended."""

    FINISHED = "finished"  # every epoch trained and evaluated
    PREEMPTED = "preempted"  # a stop signal: saved at an agreed step, requeue to go on
    NONFINITE = "nonfinite"  # the loss or the weights went NaN/inf: nothing saved after the last good checkpoint
    SAVE_FAILED = "save_failed"  # a checkpoint could not be written; the previous one is kept

    @property
    def status(self) -> str:
        """The ``end`` record's status: finished, preempted or failed."""
        return {Outcome.FINISHED: "finished", Outcome.PREEMPTED: "preempted"}.get(self, "failed")

    @property
    def exit_code(self) -> int:
        return {Outcome.FINISHED: EXIT_OK, Outcome.PREEMPTED: EXIT_REQUEUE, Outcome.NONFINITE: EXIT_NONFINITE,
                Outcome.SAVE_FAILED: EXIT_SAVE_FAILED}[self]


#: Optimizer settings a resume with an accepted ``optim.*`` change takes from the new config.
OPTIM_SETTINGS = ("base_lr", "momentum", "nesterov", "weight_decay", "dampening", "betas", "eps")


@dataclass(frozen=True)
class FitOptions:
    epochs: int  # epochs to train
    eval_every: int = 1  # evaluate every N epochs and after the last
    log_every: int = 50  # steps between logged step records
    checkpoint_every_minutes: float = 0.0  # extra mid-epoch saves; 0 = epoch ends only
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    fail_on_nonfinite: bool = True  # stop at the first non-finite loss
    hparams: dict = field(default_factory=dict)  # flattened run settings for TensorBoard HParams
    model_config: dict = field(default_factory=dict)  # architecture record kept in checkpoints
    described: dict = field(default_factory=dict)  # the input the model expects (recipe, data config, class names)
    clip_grad_norm: float = 0.0  # optim.clip_grad_norm: the gradient's global norm is clipped to this; 0 = off
    ema_decay: float = 0.0  # trainer.ema_decay: a moving average of the weights beside the model; 0 = none
    ema_every: int = 1  # optimizer steps between its updates
    ema_warmup_steps: int = 0  # steps during which it copies the weights
    mixer: Mixer | None = None  # data.mixup_alpha / cutmix_alpha: training batches mixed within BN groups
    seed: int = 0  # trainer.seed: stochastic depth's per-step draws (engine.depth) derive from it
    reset_optimizer: bool = False  # a resume takes lr/momentum/decay from the config, not the checkpoint


@dataclass
class Parts:
    """The built objects a run trains (each from its own config subtree)."""

    model: nn.Module  # what the step calls: the network, maybe wrapped in DDP and/or torch.compile
    raw: nn.Module  # the bare network: its state_dict is what checkpoints hold
    loaders: Loaders  # this rank's train and val loaders
    opt: torch.optim.Optimizer  # SGD over ``raw``'s parameters; each group keeps its ``base_lr``
    schedule: Schedule  # lr factor per global step; also fixes the steps of an epoch
    precision: Precision  # autocast dtype, loss scaling, memory format


@dataclass
class Progress:
    """Where the run is; everything a resume needs besides the modules' own state."""

    epoch: int = 0  # current epoch (0-based)
    step_in_epoch: int = 0  # optimizer steps done within it
    global_step: int = 0  # optimizer steps done in the run
    best_top1: float | None = None  # best validation top-1 error so far (%), chosen on the evaluation set
    wall_time: float = 0.0  # training seconds over all starts


def _gather(obj, world: World) -> list:
    if not world.distributed:
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


class Trainer:
    """Runs the epochs of one start of a run: train, evaluate, log, save, stop when told."""

    def __init__(self, parts: Parts, plan: RunPlan, world: World, run_dir: Path, log: RunLog, opts: FitOptions,
                 resume: dict | None = None) -> None:
        p = parts
        self.model, self.raw, self.loaders, self.opt = p.model, p.raw, p.loaders, p.opt
        self.schedule, self.precision = p.schedule, p.precision
        self.plan = plan  # the batch split (micro-batches, per-process batch) and the steps of an epoch
        self.world, self.log, self.o = world, log, opts
        self.ckpt_dir = RunDir(run_dir).checkpoints
        self.steps_per_epoch = plan.steps_per_epoch
        self.scaler = p.precision.scaler()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
        self.state = Progress()  # saved in checkpoints
        self.meter = Meter(world.device)  # this epoch's training loss and errors, summed on the device
        self.last_val: dict | None = None  # the latest evaluation of this start
        self.bad_step: int | None = None  # the first step whose loss or weights were not finite
        self.epoch_images_per_s = 0.0  # training throughput of the latest epoch (this start's part of it)
        self.images_trained = 0  # images stepped on in this start, over all ranks (counted, not requested)
        # non-finite detection stays on the device: the first bad step is read at sync points only
        self.first_bad = torch.full((), -1, dtype=torch.long, device=world.device)
        self.step_dev = torch.zeros((), dtype=torch.long, device=world.device)
        # CPU: a sync every step costs nothing; GPU: only at logging intervals, keeping the GPU fed
        self.sync_every = 1 if world.device.type == "cpu" else opts.log_every
        self.ema = (WeightEMA(self.raw, opts.ema_decay, opts.ema_every, opts.ema_warmup_steps)
                    if opts.ema_decay > 0 else None)  # evaluated and saved beside the model
        self.drop_blocks = dropping_blocks(self.raw)  # model.drop_path's blocks, drawn for per step
        self.depth = DepthDraws(len(self.drop_blocks), opts.seed) if self.drop_blocks else None
        self.resumed = resume is not None  # this start continues a checkpoint
        self.written_by = world.world_size  # processes of the start that wrote the checkpoint resumed from
        if resume is not None:
            self._restore(resume)

    # ---- checkpoints -------------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        """Continue from a checkpoint (its model_config already checked against this run's)."""
        self.raw.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:  # (turned on at this resume: starts as a copy)
            self.ema.load_state_dict(state["ema"])
        fresh = [{k: g[k] for k in OPTIM_SETTINGS if k in g} for g in self.opt.param_groups]
        self.opt.load_state_dict(state["optimizer"])
        prime_momentum(self.opt)  # a checkpoint from before the first step holds no momentum buffers
        if self.o.reset_optimizer:  # an accepted change of optim.*: the new settings from this step on
            for g, settings in zip(self.opt.param_groups, fresh, strict=True):
                g.update(settings)
        self.scaler.load_state_dict(state["scaler"])
        self.state = Progress(**state["progress"])
        per_rank = state["per_rank"]
        self.written_by = len(per_rank)
        if len(per_rank) == self.world.world_size:  # same world: each rank continues its own streams
            mine = per_rank[self.world.rank]
            ckpt.set_rng_state(mine["rng"], self.world.device)
            self.meter.load(mine["meter"])
        elif self.world.is_main:  # another world size: the epoch's training sums so far go to rank 0
            self.meter.load(torch.stack([r["meter"] for r in per_rank]).sum(0))
        self.step_dev.fill_(self.state.global_step)

    def save(self, best: bool = False) -> None:
        """Collective: every rank contributes its RNG and meter state; rank 0 writes.

        A failed write (disk full, I/O error, permission) raises SaveError on every rank; the previous
        checkpoint stays loadable.
        """
        per_rank = _gather({"rng": ckpt.rng_state(self.world.device), "meter": self.meter.state()}, self.world)
        error = ""
        if self.world.is_main:
            state = {"model": self.raw.state_dict(), "optimizer": self.opt.state_dict(),
                     "scaler": self.scaler.state_dict(), "progress": vars(self.state).copy(),
                     "per_rank": per_rank, "model_config": self.o.model_config, "described": self.o.described,
                     "world_size": self.world.world_size}
            if self.ema is not None:
                state["ema"] = self.ema.state_dict()
            path = self.ckpt_dir / ckpt.LAST
            try:
                ckpt.atomic_save(state, path, keep_previous=True)
                if best:
                    path = self.ckpt_dir / ckpt.BEST
                    ckpt.atomic_save({"model": state["model"], "model_config": self.o.model_config,
                                      "described": self.o.described,
                                      "progress": state["progress"]}, path)
            except OSError as e:
                error = f"{path}: cannot write the checkpoint ({e.strerror or e})"
        failed = all_reduce_max(torch.tensor(float(bool(error)), device=self.world.device))  # sync
        if failed.item() > 0:
            raise SaveError(error or "rank 0 could not write the checkpoint")

    # ---- sync points -------------------------------------------------------------------------
    def _nonfinite(self, check_weights: bool = False) -> bool:
        """Whether a loss (or, before a save, a weight) went non-finite; sets ``bad_step``."""
        if not self.o.fail_on_nonfinite:
            return False
        bad = int(all_reduce_max(self.first_bad.clone()).item())  # sync
        if bad < 0 and check_weights:
            finite = torch.stack([torch.isfinite(p).all() for p in self.raw.parameters()]).all()
            if not bool(finite):  # sync
                bad = self.state.global_step
        self.bad_step = bad if bad >= 0 else None
        return self.bad_step is not None

    def _agree(self, stop: StopFlag, save_due: bool = False) -> bool:
        """Sets ``stop.agreed`` and returns whether a save is due, both the same on every rank."""
        flags = torch.tensor([float(stop.requested), float(save_due)], device=self.world.device)
        flags = all_reduce_max(flags).tolist()  # sync: every rank stops/saves at the same step
        stop.agreed = flags[0] > 0
        return flags[1] > 0

    # ---- one epoch ---------------------------------------------------------------------------
    def train_epoch(self, stop: StopFlag) -> Outcome | None:
        """Train the rest of the current epoch.

        Returns None when the epoch reached its last step (``end_epoch`` comes next), PREEMPTED after
        a mid-epoch save at an agreed stop, NONFINITE at a bad loss.
        """
        s, loader = self.state, self.loaders.train
        loader.set_epoch(s.epoch, s.step_in_epoch)
        self.model.train()
        base_lrs = [g["base_lr"] for g in self.opt.param_groups]
        last_sync = last_save = epoch_start = time.perf_counter()
        epoch_images, images_since_log, steps_since_log, data_time = 0, 0, 0, 0.0
        self.log.start_bar(self.steps_per_epoch, s.step_in_epoch, f"epoch {s.epoch + 1}/{self.o.epochs}")
        batches = iter(loader)
        while s.step_in_epoch < self.steps_per_epoch:
            t0 = time.perf_counter()
            x, y = next(batches)
            data_time += time.perf_counter() - t0
            factor = self.schedule.factor(s.global_step)
            for g, base in zip(self.opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * factor
            target = y
            mixer = self.o.mixer
            if mixer is not None and mixer.on:  # the step's draw: a function of (seed, epoch, step)
                group = max(1, mixer.group * y.shape[0] // self.plan.batch)  # (a kept last batch: smaller)
                x, target = mixer(x, y, mixer.draw(s.epoch, s.step_in_epoch, x.shape[-2], x.shape[-1]), group)
            drops = None
            if self.depth is not None:  # per image and block: a function of (seed, epoch, step, position)
                w = self.world
                draws = self.depth.rows(s.epoch, s.step_in_epoch, w.rank, w.world_size, y.shape[0])
                drops = (self.drop_blocks, draws.to(x.device, non_blocking=True))
            with groups_of_a_partial_batch(self.model, y.shape[0], self.plan.batch):
                loss, logits = train_step(self.model, x, target, self.opt, self.scaler, self.precision,
                                          self.criterion, self.plan.micro_batches, self.o.clip_grad_norm, drops)
            self.meter.update(loss, logits, y)
            images = y.shape[0] * self.world.world_size  # every rank steps on an equal share (ShardPlan)
            epoch_images += images
            images_since_log += images
            self.images_trained += images
            self.step_dev += 1
            self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), self.step_dev, self.first_bad)
            s.step_in_epoch += 1
            s.global_step += 1
            if self.ema is not None:
                self.ema.update(self.raw, s.global_step)
            steps_since_log += 1
            self.log.advance()

            at_log = s.global_step % self.o.log_every == 0
            at_end = s.step_in_epoch == self.steps_per_epoch
            if not (at_log or at_end or s.global_step % self.sync_every == 0):
                continue  # no host-device sync on this step
            if self._nonfinite():
                self.log.close_bar()
                return Outcome.NONFINITE
            now = time.perf_counter()
            if at_log:
                ips = images_since_log / max(now - last_sync, 1e-9)
                lr = base_lrs[0] * factor
                logged = float(loss.item())  # already synced above
                self.log.record("step", epoch=s.epoch, step=s.global_step, loss=logged, lr=lr,
                                images_per_s=ips, data_time=data_time / steps_since_log)
                self.log.advance(0, loss=f"{logged:.3f}", lr=f"{lr:.4g}", img_s=f"{ips:.0f}")
                s.wall_time += now - last_sync
                last_sync, steps_since_log, images_since_log, data_time = now, 0, 0, 0.0
            minutes = self.o.checkpoint_every_minutes
            save_due = self._agree(stop, minutes > 0 and now - last_save > 60 * minutes and self.world.is_main)
            if at_end:
                break  # end_epoch evaluates and saves (then stops if agreed)
            if stop.agreed or save_due:
                s.wall_time += now - last_sync
                last_sync, steps_since_log, images_since_log, data_time = now, 0, 0, 0.0
                if self._nonfinite(check_weights=True):
                    self.log.close_bar()
                    return Outcome.NONFINITE
                self.save()
                last_save = now
                if stop.agreed:
                    self.log.close_bar()
                    return Outcome.PREEMPTED
        end = time.perf_counter()
        s.wall_time += end - last_sync
        self.epoch_images_per_s = epoch_images / max(end - epoch_start, 1e-9)
        self.log.close_bar()
        return None

    def end_epoch(self, epoch_time: float) -> Outcome | None:
        """Evaluate when due, log the epoch, save; NONFINITE (nothing saved) if the weights went bad."""
        s = self.state
        train = self.meter.reduce()  # sync
        rec = {"epoch": s.epoch, "step": s.global_step, "lr": self.opt.param_groups[0]["lr"],
               "train_loss": train["loss"], "train_top1_err": train["top1_err"],
               "train_top5_err": train["top5_err"], "wall_time": s.wall_time}
        last = s.epoch + 1 == self.o.epochs
        is_best, msg = False, ""
        if (s.epoch + 1) % self.o.eval_every == 0 or last:
            val = self.last_val = evaluate(self.raw, self.loaders.val, self.precision)
            rec.update(val_loss=val["loss"], val_top1_err=val["top1_err"], val_top5_err=val["top5_err"])
            is_best = s.best_top1 is None or val["top1_err"] < s.best_top1
            if is_best:
                s.best_top1 = val["top1_err"]
            msg = f"val top-1 error {val['top1_err']:.2f}%  top-5 {val['top5_err']:.2f}%  ({val['samples']} images)"
            if self.ema is not None:
                ema = evaluate(self.ema.module, self.loaders.val, self.precision)
                rec.update(val_ema_top1_err=ema["top1_err"], val_ema_top5_err=ema["top5_err"])
                msg += f"; EMA top-1 error {ema['top1_err']:.2f}%"
        rec.update(epoch_time=epoch_time, images_per_s=self.epoch_images_per_s)
        self.log.record("epoch", **rec)
        self.log.print(f"epoch {s.epoch + 1}/{self.o.epochs}: train loss {train['loss']:.4f}, train top-1 error "
                       f"{train['top1_err']:.2f}%, {epoch_time:.1f} s at {self.epoch_images_per_s:.0f} images/s"
                       f"{';  ' + msg if msg else ''}")
        s.epoch += 1
        s.step_in_epoch = 0
        self.meter = Meter(self.world.device)
        if self._nonfinite(check_weights=True):
            return Outcome.NONFINITE
        self.save(best=is_best)
        return None

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Train to the last epoch or to a stop; logs the end and returns how it ended."""
        s = self.state
        outcome = Outcome.FINISHED
        # HParams at every start, so a run stopped before its end has them too; a finished run writes them
        # again below with its best error
        self.log.hparams(self.o.hparams, {"best_val_top1_err": s.best_top1 if s.best_top1 is not None else math.nan})
        with StopFlag() as stop:
            while s.epoch < self.o.epochs:
                epoch_start = time.perf_counter()
                try:
                    ended = self.train_epoch(stop) or self.end_epoch(time.perf_counter() - epoch_start)
                except SaveError as e:
                    self.log.error(f"error: {e}; the previous checkpoint is kept (exit {EXIT_SAVE_FAILED})")
                    ended = Outcome.SAVE_FAILED
                if ended is None and s.epoch < self.o.epochs:
                    self._agree(stop)  # a signal that came during evaluation or the save
                    ended = Outcome.PREEMPTED if stop.agreed else None
                if ended is not None:
                    outcome = ended
                    break
        if outcome is Outcome.NONFINITE:
            self.log.error(f"error: non-finite loss at step {self.bad_step}; stopped without saving "
                           f"(last good checkpoint: {self.ckpt_dir / ckpt.LAST})")
        elif outcome is Outcome.PREEMPTED:
            self.log.print(f"stop requested: saved at step {s.global_step}; exit {EXIT_REQUEUE} (requeue me)")
        self.log.record("end", status=outcome.status, reason=outcome.value, step=s.global_step, best_val_top1_err=s.best_top1)
        if outcome is Outcome.FINISHED:
            self.log.hparams(self.o.hparams, {"best_val_top1_err": s.best_top1 or float("nan")})
            if self.last_val is not None:
                self.log.print(f"done: final val top-1 error {self.last_val['top1_err']:.2f}%, "
                               f"top-5 {self.last_val['top5_err']:.2f}% (best top-1 {s.best_top1:.2f}%, "
                               "chosen on the evaluation set)")
        return outcome
