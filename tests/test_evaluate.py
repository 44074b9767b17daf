"""`resnext.evaluate`: a run dir or weights file scores the same as training measured, on any world size."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from runs import PY, ROOT, TINY, TORCHRUN, env, records, train


def evaluate(*args, nproc=1):
    cmd = [PY, "-m", "resnext.evaluate", *args] if nproc == 1 else [
        TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "resnext.evaluate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval") / "run"
    res = train(d, "trainer.epochs=1", "trainer.max_steps_per_epoch=4")
    assert res.returncode == 0, res.stderr
    return d


@pytest.mark.slow
def test_run_dir_evaluates_like_training_on_1_and_2_processes(run_dir):
    want = records(run_dir, "epoch")[-1]
    for nproc in (1, 2):
        res = evaluate(str(run_dir), nproc=nproc)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout.strip().splitlines()[-1])
        assert got["samples"] == 359
        assert got["top1_err"] == pytest.approx(want["val_top1_err"], abs=1e-9)
        assert got["top5_err"] == pytest.approx(want["val_top5_err"], abs=1e-9)


def test_torchvision_layout_weights_file(run_dir, tmp_path):
    sd = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "plain.pth")  # a DDP-saved state dict
    res = evaluate(str(tmp_path / "plain.pth"), *TINY)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["top1_err"] == pytest.approx(records(run_dir, "epoch")[-1]["val_top1_err"], abs=1e-9)


def test_bad_inputs_one_line(run_dir, tmp_path):
    for args, expect in [([str(tmp_path / "missing.pt")], "missing.pt: no such weights file or run directory"),
                         ([str(tmp_path)], "not a run directory"),
                         ([str(run_dir), "data.val_crop=abc"], "val_crop")]:
        res = evaluate(*args)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], res.stderr
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pth")
    res = evaluate(str(tmp_path / "wrong.pth"), *TINY)
    assert res.returncode == 2 and "do not fit" in res.stderr and len(res.stderr.strip().splitlines()) == 1
