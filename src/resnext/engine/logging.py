"""Rank-0 output of a run: console lines, tqdm bar, metrics.jsonl and TensorBoard scalars/HParams."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

METRICS = "metrics.jsonl"


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
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


class RunLog:
    """Writes nothing unless ``enabled`` (rank 0). ``resume_step`` purges later TensorBoard events."""

    def __init__(self, run_dir: Path, enabled: bool, progress: bool, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.progress = progress and enabled
        self.run_dir = run_dir
        self.bar = None
        self.tb = None
        self.file = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir / METRICS, resume_step)
        self.file = open(run_dir / METRICS, "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def error(self, msg: str) -> None:
        """One line on stderr (rank 0)."""
        if self.enabled:
            self.close_bar()
            print(msg, file=sys.stderr, flush=True)

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
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True,
                            leave=False)

    def advance(self, n: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.close_bar()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.file is not None:
            self.file.close()
