"""Rank-0 output of a run: console lines, progress (tqdm bar or plain lines), metrics.jsonl, TensorBoard."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from ..errors import printable
from .rundir import RunDir, open_in_run_dir, private_umask, write_text_atomic

PLAIN_EVERY_S = 30.0  # without a terminal: at most one plain progress line per this many seconds (at log steps)


def _clean(v):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def truncate_metrics(path: Path, step: int) -> None:
    """Drop step/epoch records past ``step`` (logged after the checkpoint a resume starts from).

    The rewrite is atomic; start/end records are kept so the history of starts stays readable.
    """
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write
        if rec.get("kind") in ("step", "epoch") and rec.get("step", 0) > step:
            continue
        keep.append(json.dumps(rec))
    write_text_atomic(path, "".join(line + "\n" for line in keep))  # a unique temporary name: nothing planted


def _clock(seconds: float) -> str:
    """0:01:05 for 65 s."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PlainProgress:
    """What a progress bar shows, as one plain line now and then: for logs that are files (no ``\\r``).

    A line is printed at a step that brings fresh values (a log step) when ``every_s`` seconds have
    passed since the last line, and always at an epoch's first log step.
    """

    def __init__(self, total: int, initial: int, desc: str, every_s: float, say) -> None:
        self.total, self.n, self.initial, self.desc = total, initial, initial, desc
        self.every_s, self.say = every_s, say
        self.start = time.monotonic()
        self.last_line: float | None = None

    def update(self, n: int, postfix: dict) -> None:
        self.n += n
        now = time.monotonic()
        if not postfix or (self.last_line is not None and now - self.last_line < self.every_s):
            return
        self.last_line = now
        done = self.n - self.initial
        eta = (self.total - self.n) * (now - self.start) / done if done > 0 else 0.0
        values = ", ".join(f"{v} images/s" if k == "img_s" else f"{k} {v}" for k, v in postfix.items())
        self.say(f"{self.desc} step {self.n}/{self.total}: {values}, epoch ETA {_clock(eta)}")


class RunLog:
    """Writes nothing unless ``enabled`` (rank 0). ``resume_step`` purges later TensorBoard events.

    Progress (``progress``): a tqdm bar on stderr when stderr is a terminal, else plain lines on stdout
    (a Slurm log, ``2> file``, a pipe): step, loss, lr, images/s and the epoch's ETA, at the log steps,
    at most one line per ``PLAIN_EVERY_S`` seconds.
    """

    def __init__(self, run_dir: Path, enabled: bool, progress: bool, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.progress = progress and enabled
        self.tty = self.progress and sys.stderr.isatty()
        self.run_dir = run_dir
        self.bar = None
        self.tb = None
        self.file = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(RunDir(run_dir).metrics, resume_step)
        fd = open_in_run_dir(RunDir(run_dir).metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~private_umask())
        self.file = os.fdopen(fd, "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(RunDir(run_dir).tb), purge_step=resume_step + 1 if resume_step else None)

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None and self.tty:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def error(self, msg: str) -> None:
        """One line on stderr (rank 0)."""
        if self.enabled:
            self.close_bar()
            print(printable(msg), file=sys.stderr, flush=True)  # names from the data escaped

    def record(self, kind: str, **fields) -> None:
        """Append one metrics.jsonl line; numeric fields of step/epoch records also go to TensorBoard."""
        if not self.enabled:
            return
        rec = {"kind": kind, **{k: _clean(v) for k, v in fields.items()}}
        if kind in ("start", "end"):
            rec["time"] = time.time()
        self.file.write(json.dumps(rec) + "\n")
        if kind in ("step", "epoch"):
            prefix = "step" if kind == "step" else "epoch"
            for k, v in fields.items():
                if k in ("epoch", "step") or not isinstance(v, int | float):
                    continue
                tag = f"{prefix}/{k}" if kind == "step" else (k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else f"epoch/{k}")
                self.tb.add_scalar(tag, v, fields["step"])

    def hparams(self, hparams: dict, metrics: dict) -> None:
        """Hyper-parameters and final metrics to TensorBoard's HParams view."""
        if not self.enabled:
            return
        flat = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in hparams.items()}
        mets = {f"hparam/{k}": v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
        self.tb.add_hparams(flat, mets, run_name=".")

    def start_bar(self, total: int, initial: int, desc: str) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True,
                            leave=False)
        elif self.progress:
            self.bar = PlainProgress(total, initial, desc, PLAIN_EVERY_S, lambda line: print(line, flush=True))

    def advance(self, n: int = 1, **postfix) -> None:
        if isinstance(self.bar, PlainProgress):
            self.bar.update(n, postfix)
        elif self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None and self.tty:
            self.bar.close()
        self.bar = None

    def close(self) -> None:
        self.close_bar()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.file is not None:
            self.file.close()
