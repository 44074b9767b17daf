"""Survive preemption: SIGTERM/SIGKILL at a random step then resume gives bit-identical weights;
atomic, weights-only checkpoints with fallback; a non-finite loss stops the run without saving."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from runs import PY, ROOT, TINY, TORCHRUN, env, records, train, wait_for_step, weights

from resnext.engine import checkpoint as ckpt

RUN = ["trainer.epochs=2", "trainer.max_steps_per_epoch=6"]
STEPS = 12


def start(run_dir: Path, *extra: str, nproc: int = 1) -> subprocess.Popen:
    args = [*TINY, f"hydra.run.dir={run_dir}", *RUN, *extra]
    cmd = [PY, str(ROOT / "train.py"), *args] if nproc == 1 else [
        TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "train.py"), *args]
    return subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = records(a, "step"), records(b, "step")
    assert [r["step"] for r in sb] == list(range(1, STEPS + 1))
    assert [(r["loss"], r["lr"]) for r in sa] == [(r["loss"], r["lr"]) for r in sb]
    keys = ("train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "lr", "step")
    assert [[r[k] for k in keys] for r in records(a, "epoch")] == [[r[k] for k in keys] for r in records(b, "epoch")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    res = train(d, *RUN)
    assert res.returncode == 0, res.stderr
    return d


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_is_bit_identical(reference, tmp_path):
    k = random.randint(2, STEPS - 2)
    d = tmp_path / "run"
    proc = start(d)
    wait_for_step(d, proc, k)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, (k, err)
    assert records(d, "end")[-1]["status"] == "preempted"
    stopped = torch.load(d / "checkpoints" / "last.pt", weights_only=True)["progress"]["global_step"]
    assert k <= stopped < STEPS, (k, stopped)
    res = train(d, *RUN)
    assert res.returncode == 0, res.stderr
    assert f"step {stopped}" in res.stdout
    assert_same_run(reference, d)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path):
    k = random.randint(2, STEPS - 2)
    d = tmp_path / "run"
    proc = start(d, "trainer.checkpoint_every_minutes=0.0001")  # a save at (almost) every step
    wait_for_step(d, proc, k)
    proc.kill()
    proc.communicate(timeout=60)
    res = train(d, *RUN)
    assert res.returncode == 0, (k, res.stderr)
    assert_same_run(reference, d)


@pytest.mark.slow
def test_two_process_sigterm_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    proc = start(ref, nproc=2)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    k = random.randint(2, STEPS - 2)
    d = tmp_path / "run"
    proc = start(d, nproc=2)
    wait_for_step(d, proc, k)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards SIGTERM to both workers
    proc.communicate(timeout=120)
    assert records(d, "end")[-1]["status"] == "preempted", k
    proc = start(d, nproc=2)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    assert_same_run(ref, d)


def test_truncated_newest_falls_back_to_previous(tmp_path):
    ckpt.atomic_save({"n": torch.tensor(1)}, tmp_path / ckpt.LAST, keep_previous=True)
    ckpt.atomic_save({"n": torch.tensor(2)}, tmp_path / ckpt.LAST, keep_previous=True)
    data = (tmp_path / ckpt.LAST).read_bytes()
    (tmp_path / ckpt.LAST).write_bytes(data[: len(data) // 2])
    warnings = []
    state, corrupt = ckpt.load_latest(tmp_path, warnings.append)
    assert int(state["n"]) == 1 and corrupt == tmp_path / ckpt.LAST
    assert len(warnings) == 1 and "falling back to" in warnings[0] and "\n" not in warnings[0]


class Exploding:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated inside the serializer)")


def test_failed_save_leaves_previous_loadable(tmp_path):
    ckpt.atomic_save({"n": torch.tensor(7)}, tmp_path / ckpt.LAST, keep_previous=True)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.atomic_save({"w": torch.ones(1000), "x": Exploding()}, tmp_path / ckpt.LAST, keep_previous=True)
    assert int(ckpt.safe_load(tmp_path / ckpt.LAST)["n"]) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LAST]  # no temporary left behind


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Payload.marker}",))


def test_code_carrying_pickle_is_refused_never_run(tmp_path):
    Payload.marker = tmp_path / "pwned"
    (tmp_path / "checkpoints").mkdir()
    evil = tmp_path / "checkpoints" / ckpt.LAST
    torch.save({"model": {}, "evil": Payload()}, evil)
    with pytest.raises(ckpt.CheckpointError, match="refused") as e:
        ckpt.safe_load(evil)
    assert not Payload.marker.exists()
    assert "\n" not in str(e.value)
    # through the trainer: one line, exit 2, nothing executed
    res = train(tmp_path, *RUN)
    assert res.returncode == 2 and "refused" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not Payload.marker.exists()


def test_injected_nan_stops_at_that_step_without_saving(tmp_path, capsys):
    from resnext.compose import compose_config
    from resnext.engine.dist import init_world
    from resnext.errors import EXIT_NONFINITE
    from resnext.session import build

    cfg = compose_config([*TINY, *RUN])
    fit = build(cfg, init_world("cpu"), tmp_path)
    real = fit.loaders.train

    class NaNAt:  # the real loader, with one batch poisoned
        def __init__(self, inner, bad_epoch, bad_step):
            self.inner, self.bad, self.num_samples = inner, (bad_epoch, bad_step), inner.num_samples

        def __len__(self):
            return len(self.inner)

        def set_epoch(self, epoch, start_step=0):
            self.epoch, self.start = epoch, start_step
            self.inner.set_epoch(epoch, start_step)

        def __iter__(self):
            for i, (x, y) in enumerate(self.inner, self.start):
                yield (x * float("nan") if (self.epoch, i) == self.bad else x), y

    fit.loaders.train = NaNAt(real, 1, 2)  # epoch 2, its third step: global step 6 + 3 = 9
    code = fit.run().exit_code
    fit.log.close()
    assert code == EXIT_NONFINITE
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "non-finite loss at step 9" in err[0]
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["progress"]["global_step"] == 6  # the epoch-1 checkpoint, nothing after
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert max(r["step"] for r in records(tmp_path, "step")) == 8
    assert records(tmp_path, "end")[-1]["status"] == "failed"
