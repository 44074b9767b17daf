"""Helpers that run the real train.py / torchrun in subprocesses (for tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(PY).with_name("torchrun"))

# a tiny ResNeXt-29 on the real digits data: a few seconds per run on 2 cores
TINY = ["+recipe=resnext29_demo_digits", "model.cardinality=2", "model.width=2", "data.batch_size=32",
        "trainer.progress=false", "trainer.device=cpu", "trainer.log_every=1", "schedule=step",
        "schedule.milestones=[1]", "schedule.warmup_epochs=0"]


def env(**extra) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if k not in extra:
            e.pop(k, None)
    return e


def train(run_dir: Path, *overrides: str, nproc: int = 1, timeout: int = 300, extra_env: dict | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess:
    args = [*TINY, f"hydra.run.dir={run_dir}", *overrides]
    if nproc == 1:
        cmd = [PY, str(ROOT / "train.py"), *args]
    else:
        cmd = [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "train.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(**(extra_env or {})),
                          cwd=cwd or ROOT)


def records(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    return [r for r in recs if kind is None or r["kind"] == kind]


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


def wait_for_step(run_dir: Path, proc: subprocess.Popen, step: int = 2, timeout: float = 240) -> None:
    """Wait until a training process ``proc`` has logged optimizer step ``step`` in its metrics.jsonl (it
    must stay alive meanwhile; a half-written last line is read again later)."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            if any(r.get("step", 0) >= step for r in records(run_dir, "step")):
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"step {step} never logged in {run_dir}")


def hparams(run_dir: Path) -> dict:
    """The hyper-parameters of the run's TensorBoard HParams session-start summary ({} if none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:
        return {}
    found = {}
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            found = dict(data.session_start_info.hparams.items())
    return found
