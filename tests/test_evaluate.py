"""`resnext.evaluate`: a run dir or weights file scores the same as training measured, on any world size."""

from __future__ import annotations

import json
import shutil
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
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=4")
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


def scores(res) -> dict:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_final_model_by_default_best_on_request(run_dir, tmp_path):
    """A run directory means its final model (last.pt); best.pt only with --checkpoint best; a checkpoint
    file inside a run directory brings that run's config.yaml (no recipe or data overrides given)."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    first, last = records(run, "epoch")
    assert first["val_loss"] != last["val_loss"]
    # best.pt made to hold epoch 1's model (last.prev.pt): whichever epoch training found best, the two differ
    shutil.copy(run / "checkpoints" / "last.prev.pt", run / "checkpoints" / "best.pt")
    for args, want, file in [([str(run)], last, "last.pt"), ([str(run), "--checkpoint", "best"], first, "best.pt"),
                             ([str(run / "checkpoints" / "last.prev.pt")], first, "last.prev.pt"),
                             ([str(run / "checkpoints" / "last.pt")], last, "last.pt")]:
        got = scores(evaluate(*args))
        assert got["weights"].endswith(file), args
        assert (got["top1_err"], got["top5_err"]) == pytest.approx((want["val_top1_err"], want["val_top5_err"]),
                                                                   abs=1e-9), args
        assert got["loss"] == pytest.approx(want["val_loss"], rel=1e-6), args
    (run / "checkpoints" / "best.pt").unlink()
    res = evaluate(str(run), "--checkpoint", "best")
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: {run}: no checkpoints/best.pt in this run directory (it has checkpoints/last.pt: --checkpoint last)")


@pytest.mark.slow
def test_ten_crops_exact_over_ranks_and_as_torchvision_ten_crop(run_dir):
    """--crops 10 counts each val image once on 1 and 2 processes, and scores as the softmax mean over
    torchvision's ten_crop of each whole 16x16 digits image (crops of 12; in-memory sets crop their stored
    images), computed here from the single-crop loader's batches."""
    import torchvision.transforms.functional as F
    from imagenet_data_helpers import loaders_for

    from resnext.data import Placement
    from resnext.engine.rundir import RunDir
    from resnext.loading import load_model, typed_config

    got = [scores(evaluate(str(run_dir), "--crops", "10", "data.val_crop=12", nproc=n)) for n in (1, 2)]
    assert got[0]["crops"] == 10 and got[0]["samples"] == got[1]["samples"] == 359
    assert (got[0]["top1_err"], got[0]["top5_err"]) == (got[1]["top1_err"], got[1]["top5_err"])
    assert got[0]["loss"] == pytest.approx(got[1]["loss"], rel=1e-6)  # fp32 sums split differently
    model = load_model(run_dir).model
    cfg = typed_config(RunDir(run_dir).saved_config(), [])
    loaders = loaders_for(cfg.data, Placement(0, 1, torch.device("cpu"), torch.float32, False, 0, 0, 0), 10)
    loaders.val.set_epoch(0)
    hits1 = hits5 = n = 0
    nll = 0.0
    with torch.no_grad():
        for x, y in loaders.val:
            assert x.shape[-2:] == (16, 16)
            for img, label in zip(x, y.tolist(), strict=True):
                p = model(torch.stack(F.ten_crop(img, [12, 12]))).softmax(dim=1).mean(dim=0)
                top = p.topk(5).indices.tolist()
                hits1, hits5, n = hits1 + (top[0] == label), hits5 + (label in top), n + 1
                nll -= p[label].log().item()
    assert n == 359
    assert got[0]["top1_err"] == pytest.approx(100 * (1 - hits1 / n), abs=1e-9)
    assert got[0]["top5_err"] == pytest.approx(100 * (1 - hits5 / n), abs=1e-9)
    assert got[0]["loss"] == pytest.approx(nll / n, rel=1e-5)
    single = scores(evaluate(str(run_dir), "data.val_crop=12"))
    assert single["crops"] == 1 and single["loss"] != got[0]["loss"]


def test_torchvision_layout_weights_file(run_dir, tmp_path):
    sd = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "plain.pth")  # a DDP-saved state dict
    res = evaluate(str(tmp_path / "plain.pth"), *TINY)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["top1_err"] == pytest.approx(records(run_dir, "epoch")[-1]["val_top1_err"], abs=1e-9)


def test_bad_inputs_one_line(run_dir, tmp_path):
    for args, expect in [([str(tmp_path / "missing.pt")], "missing.pt: no such weights file or run directory"),
                         ([str(tmp_path)], "not a run directory"),
                         ([str(run_dir), "data.val_crop=abc"], "val_crop"),
                         ([str(run_dir), "--checkpoint", "first"], "argument --checkpoint: invalid choice")]:
        res = evaluate(*args)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], res.stderr
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pth")
    res = evaluate(str(tmp_path / "wrong.pth"), *TINY)
    assert res.returncode == 2 and "do not fit" in res.stderr and len(res.stderr.strip().splitlines()) == 1
