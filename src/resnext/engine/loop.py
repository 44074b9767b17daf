"""The training loop: train_step, evaluate and fit; the only place an optimizer step happens."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..data.base import Loaders
from ..errors import EXIT_NONFINITE, EXIT_REQUEUE
from ..schedule import Schedule
from . import checkpoint as ckpt
from .dist import World, all_reduce_max
from .logging import RunLog
from .metrics import Meter
from .precision import Precision


@dataclass
class FitOptions:
    epochs: int  # epochs to train
    eval_every: int = 1  # evaluate every N epochs and after the last
    log_every: int = 50  # steps between logged step records
    checkpoint_every_minutes: float = 0.0  # extra mid-epoch saves; 0 = epoch ends only
    max_steps_per_epoch: int = 0  # cap on steps per epoch; 0 = whole epoch
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    fail_on_nonfinite: bool = True  # stop at the first non-finite loss
    hparams: dict = field(default_factory=dict)  # flattened run settings for TensorBoard HParams
    model_config: dict = field(default_factory=dict)  # architecture record kept in checkpoints


@dataclass
class Progress:
    """Where the run is; everything a resume needs besides the modules' own state."""

    epoch: int = 0  # current epoch (0-based)
    step_in_epoch: int = 0  # optimizer steps done within it
    global_step: int = 0  # optimizer steps done in the run
    best_top1: float | None = None  # best validation top-1 error so far (%)
    wall_time: float = 0.0  # training seconds over all starts


class StopFlag:
    """Set by SIGUSR1/SIGTERM; the loop stops at the next step boundary that all ranks agree on."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> StopFlag:
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision, criterion: nn.Module):
    """One optimizer step in the one precision path; returns (loss, logits) still on the device."""
    with precision.autocast():
        logits = model(x)
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # fp16: skips the update when gradients overflowed (not a failure)
    scaler.update()
    return loss, logits


@torch.no_grad()
def evaluate(model: nn.Module, loader, precision: Precision) -> dict[str, float]:
    """Loss and top-1/top-5 error over the whole evaluation set (each sample once over all ranks)."""
    was_training = model.training
    model.eval()
    meter = Meter(next(model.parameters()).device)
    loader.set_epoch(0)
    for x, y in loader:
        with precision.autocast():
            logits = model(x)
        meter.update(nn.functional.cross_entropy(logits.float(), y), logits, y)
    model.train(was_training)
    return meter.reduce()  # sync: all ranks' counts summed exactly


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def _gather(obj, world: World) -> list:
    if not world.distributed:
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


class Fit:
    """Runs epochs over built objects; owns the resume/save/stop logic so the step stays short."""

    def __init__(self, model, raw_model, loaders: Loaders, optimizer, schedule: Schedule, precision: Precision,
                 world: World, run_dir: Path, log: RunLog, opts: FitOptions) -> None:
        self.model, self.raw = model, raw_model
        self.loaders, self.opt, self.schedule = loaders, optimizer, schedule
        self.precision, self.world, self.run_dir, self.log, self.o = precision, world, run_dir, log, opts
        self.scaler = precision.scaler()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
        self.state = Progress()
        self.last_val: dict | None = None  # the latest evaluation of this start
        self.meter = Meter(world.device)
        self.ckpt_dir = run_dir / "checkpoints"
        self.steps_per_epoch = schedule.steps_per_epoch
        # non-finite detection stays on the device: the first bad step is read at sync points only
        self.first_bad = torch.full((), -1, dtype=torch.long, device=world.device)
        self.step_dev = torch.zeros((), dtype=torch.long, device=world.device)
        # CPU: sync every step costs nothing; GPU: only at logging intervals, keeping the GPU fed
        self.sync_every = 1 if world.device.type == "cpu" else opts.log_every

    # ---- checkpoints -------------------------------------------------------------------------
    def restore(self, state: dict) -> None:
        if state.get("model_config") != self.o.model_config:
            raise ckpt.CheckpointError(
                f"{self.ckpt_dir}: checkpoint is for model {state.get('model_config')}, this run builds "
                f"{self.o.model_config}; use another run directory (hydra.run.dir=...)")
        self.raw.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = Progress(**state["progress"])
        per_rank = state["per_rank"]
        mine = per_rank[self.world.rank] if len(per_rank) == self.world.world_size else None
        if mine is not None:
            ckpt.set_rng_state(mine["rng"], self.world.device)
            self.meter.load(mine["meter"])
        self.step_dev.fill_(self.state.global_step)

    def save(self, best: bool = False) -> None:
        """Collective: every rank contributes its RNG and meter state; rank 0 writes."""
        per_rank = _gather({"rng": ckpt.rng_state(self.world.device), "meter": self.meter.state()}, self.world)
        if not self.world.is_main:
            return
        state = {"model": self.raw.state_dict(), "optimizer": self.opt.state_dict(),
                 "scaler": self.scaler.state_dict(), "progress": vars(self.state).copy(),
                 "per_rank": per_rank, "model_config": self.o.model_config,
                 "world_size": self.world.world_size}
        ckpt.atomic_save(state, self.ckpt_dir / ckpt.LAST, keep_previous=True)
        if best:
            ckpt.atomic_save({"model": state["model"], "model_config": self.o.model_config,
                              "progress": state["progress"]}, self.ckpt_dir / ckpt.BEST)

    # ---- sync points -------------------------------------------------------------------------
    def _nonfinite_step(self, check_weights: bool = False) -> int | None:
        """The first step whose loss was not finite (1-based), if any; before a save also the weights."""
        if not self.o.fail_on_nonfinite:
            return None
        bad = int(all_reduce_max(self.first_bad.clone()).item())  # sync
        if bad < 0 and check_weights:
            finite = torch.stack([torch.isfinite(p).all() for p in self.raw.parameters()]).all()
            if not bool(finite):  # sync
                bad = self.state.global_step
        return bad if bad >= 0 else None

    def _agree(self, stop: StopFlag, save_due: bool) -> tuple[bool, bool]:
        flags = torch.tensor([float(stop.requested), float(save_due)], device=self.world.device)
        flags = all_reduce_max(flags).tolist()  # sync: every rank stops/saves at the same step
        return flags[0] > 0, flags[1] > 0

    # ---- the epoch ---------------------------------------------------------------------------
    def train_epoch(self, stop: StopFlag) -> str:
        """Train the rest of the current epoch; returns "done", "stop" or "nonfinite"."""
        s, loader = self.state, self.loaders.train
        loader.set_epoch(s.epoch, s.step_in_epoch)
        self.model.train()
        base_lrs = [g["base_lr"] for g in self.opt.param_groups]
        global_batch = self.loaders.train.num_samples // max(len(loader), 1) * self.world.world_size
        t_sync = last_save = time.perf_counter()
        t_begin, start_step = t_sync, s.step_in_epoch
        steps_since, data_time, logged_loss = 0, 0.0, None
        self.log.start_bar(self.steps_per_epoch, s.step_in_epoch, f"epoch {s.epoch + 1}/{self.o.epochs}")
        it = iter(loader)
        self._stop_agreed = False
        while s.step_in_epoch < self.steps_per_epoch:
            t0 = time.perf_counter()
            x, y = next(it)
            data_time += time.perf_counter() - t0
            factor = self.schedule.factor(s.global_step)
            for g, base in zip(self.opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * factor
            loss, logits = train_step(self.model, x, y, self.opt, self.scaler, self.precision, self.criterion)
            self.meter.update(loss, logits, y)
            self.step_dev += 1
            self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), self.step_dev, self.first_bad)
            s.step_in_epoch += 1
            s.global_step += 1
            steps_since += 1
            self.log.advance()
            at_log = s.global_step % self.o.log_every == 0
            if not (at_log or s.global_step % self.sync_every == 0 or s.step_in_epoch == self.steps_per_epoch):
                continue
            bad = self._nonfinite_step()
            if bad is not None:
                self.log.close_bar()
                self.bad_step = bad
                return "nonfinite"
            now = time.perf_counter()
            if at_log:
                ips = steps_since * global_batch / max(now - t_sync, 1e-9)
                logged_loss = float(loss.item())  # sync (already synced above)
                lr = base_lrs[0] * factor
                self.log.record("step", epoch=s.epoch, step=s.global_step, loss=logged_loss, lr=lr,
                                images_per_s=ips, data_time=data_time / steps_since)
                self.log.advance(0, loss=f"{logged_loss:.3f}", lr=f"{lr:.4g}", img_s=f"{ips:.0f}")
                s.wall_time += now - t_sync
                t_sync, steps_since, data_time = now, 0, 0.0
            minutes = self.o.checkpoint_every_minutes
            save_due = minutes > 0 and (now - last_save) > 60 * minutes and self.world.is_main
            want_stop, want_save = self._agree(stop, save_due)
            self._stop_agreed = want_stop
            if s.step_in_epoch == self.steps_per_epoch:
                break  # end_epoch evaluates and saves
            if want_stop or want_save:
                s.wall_time += now - t_sync
                t_sync, steps_since, data_time = now, 0, 0.0
                if self._nonfinite_step(check_weights=True) is not None:
                    self.log.close_bar()
                    self.bad_step = s.global_step
                    return "nonfinite"
                self.save()
                last_save = now
                if want_stop:
                    self.log.close_bar()
                    return "stop"
        end = time.perf_counter()
        s.wall_time += end - t_sync
        self.train_images_per_s = (s.step_in_epoch - start_step) * global_batch / max(end - t_begin, 1e-9)
        self.log.close_bar()
        return "stop_after_epoch" if stop.requested or self._stop_agreed else "done"

    def end_epoch(self) -> bool:
        """Evaluate when due, log the epoch, save; False if the weights went non-finite (nothing saved)."""
        s = self.state
        train = self.meter.reduce()  # sync
        rec = {"epoch": s.epoch, "step": s.global_step, "lr": self.opt.param_groups[0]["lr"],
               "train_loss": train["loss"], "train_top1_err": train["top1_err"],
               "train_top5_err": train["top5_err"], "wall_time": s.wall_time}
        last = s.epoch + 1 == self.o.epochs
        is_best = False
        if (s.epoch + 1) % self.o.eval_every == 0 or last:
            val = evaluate(self.raw, self.loaders.val, self.precision)
            self.last_val = val
            rec.update(val_loss=val["loss"], val_top1_err=val["top1_err"], val_top5_err=val["top5_err"])
            is_best = s.best_top1 is None or val["top1_err"] < s.best_top1
            if is_best:
                s.best_top1 = val["top1_err"]
            msg = f"val top-1 error {val['top1_err']:.2f}%  top-5 {val['top5_err']:.2f}%  ({val['samples']} images)"
        else:
            msg = ""
        rec["epoch_time"] = time.perf_counter() - self._epoch_t0
        rec["images_per_s"] = self.train_images_per_s
        self.log.record("epoch", **rec)
        self.log.print(f"epoch {s.epoch + 1}/{self.o.epochs}: train loss {train['loss']:.4f}, "
                       f"train top-1 error {train['top1_err']:.2f}%  {msg}".rstrip())
        s.epoch += 1
        s.step_in_epoch = 0
        self.meter = Meter(self.world.device)
        if self._nonfinite_step(check_weights=True) is not None:
            self.bad_step = s.global_step
            return False
        self.save(best=is_best)
        return True

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> int:
        """Train to the last epoch (or a stop); returns the process exit code."""
        s = self.state
        status, code = "finished", 0
        with StopFlag() as stop:
            while s.epoch < self.o.epochs:
                self._epoch_t0 = time.perf_counter()
                outcome = self.train_epoch(stop)
                if outcome in ("done", "stop_after_epoch") and not self.end_epoch():
                    outcome = "nonfinite"
                if outcome == "nonfinite":
                    self.log.error(f"error: non-finite loss at step {self.bad_step}; stopped without saving "
                                   f"(last good checkpoint: {self.ckpt_dir / ckpt.LAST})")
                    status, code = "failed", EXIT_NONFINITE
                    break
                if outcome in ("stop", "stop_after_epoch") and s.epoch < self.o.epochs:
                    self.log.print(f"stop requested: saved at step {s.global_step}; exit {EXIT_REQUEUE} (requeue me)")
                    status, code = "preempted", EXIT_REQUEUE
                    break
        self.log.record("end", status=status, step=s.global_step, best_val_top1_err=s.best_top1)
        if status == "finished":
            self.log.hparams(self.o.hparams, {"best_val_top1_err": s.best_top1 or float("nan")})
            if self.last_val is not None:
                self.log.print(f"done: final test top-1 error {self.last_val['top1_err']:.2f}%, "
                               f"top-5 {self.last_val['top5_err']:.2f}% (best top-1 {s.best_top1:.2f}%)")
        return code
