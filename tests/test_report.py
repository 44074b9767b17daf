"""`resnext.report`: values parsed back from the CSV, figures decode at their size, odd runs shown."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest
from omegaconf import OmegaConf
from PIL import Image
from runs import PY, ROOT, env, records, train

from resnext.compose import compose_config


def write_run(d, overrides, recs):
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(overrides)))
    if recs is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def epoch(i, val, train_err=50.0, top5=10.0, ips=100.0):
    return {"kind": "epoch", "epoch": i, "step": 10 * (i + 1), "train_top1_err": train_err, "train_loss": 1.0,
            "val_top1_err": val, "val_top5_err": top5, "images_per_s": ips, "wall_time": 1800.0 * (i + 1)}


def report(*paths, out):
    return subprocess.run([PY, "-m", "resnext.report", *map(str, paths), "--out", str(out)], capture_output=True,
                          text=True, env=env(), cwd=ROOT, timeout=300)


def rows(out):
    with open(out / "report.csv") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("real") / "demo"
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=2")
    assert res.returncode == 0, res.stderr
    return d


def test_table_values_from_real_and_hand_made_runs(real_run, tmp_path):
    t = tmp_path / "runs"
    start = {"kind": "start", "time": 1.0, "world_size": 8, "device": "cuda", "precision": "bf16",
             "channels_last": True, "params": 25_028_904, "macs": 4_230_479_872, "epochs": 100, "start_step": 0}
    write_run(t / "x50", ["+recipe=resnext50_32x4d_imagenet"], [
        start, epoch(0, 30.0, ips=1000), epoch(1, 24.0, top5=7.0, ips=1200), epoch(2, 25.0, top5=7.5, ips=1100),
        {"kind": "end", "time": 2.0, "status": "preempted", "step": 30, "best_val_top1_err": 24.0}])
    write_run(t / "nometrics", ["trainer.epochs=3"], None)  # no paper block, no metrics
    write_run(t / "running", ["+recipe=resnet50_imagenet"], [start, epoch(0, 40.0)])
    res = report(real_run, t, out=tmp_path / "out")
    assert res.returncode == 0, res.stderr
    r = rows(tmp_path / "out")
    x = r["runs/x50"]
    assert (x["status"], x["table"], x["row"]) == ("preempted", "Table 3", "ResNeXt-50 32x4d")
    assert float(x["paper_top1"]) == 22.2 and x["paper_top5"] == ""
    assert (float(x["best_top1"]), float(x["best_top5"])) == (24.0, 7.0)
    assert (float(x["final_top1"]), float(x["final_top5"])) == (25.0, 7.5)
    assert float(x["diff_top1"]) == pytest.approx(1.8)
    assert float(x["params_m"]) == pytest.approx(25.028904) and float(x["gflops"]) == pytest.approx(4.2305, abs=1e-3)
    assert x["epochs"] == "3/100" and float(x["wall_h"]) == 1.5 and float(x["images_per_s"]) == 1100
    assert (x["world_size"], x["precision"]) == ("8", "bf16")
    assert r["runs/running"]["status"] == "running or stopped"
    n = r["runs/nometrics"]
    assert n["status"] == "no metrics" and n["best_top1"] == "" and n["table"] == "" and n["epochs"] == "0/3"
    # the real CPU run: numbers straight from its metrics.jsonl
    demo = r["demo"]
    evals = [e for e in records(real_run, "epoch")]
    assert demo["status"] == "finished" and demo["epochs"] == "2/2"
    assert float(demo["best_top1"]) == pytest.approx(min(e["val_top1_err"] for e in evals))
    assert float(demo["final_top1"]) == pytest.approx(evals[-1]["val_top1_err"])
    assert demo["world_size"] == "1" and demo["precision"] == "fp32"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| demo | finished |" in md and "| runs/nometrics | no metrics |" in md
    with Image.open(tmp_path / "out" / "curves.png") as im:
        assert im.format == "PNG" and im.size == (900, 550)
    assert not (tmp_path / "out" / "fig7.png").exists()  # no CIFAR sweep here


def test_cifar_sweep_makes_fig7(tmp_path):
    sweep = tmp_path / "multirun" / "resnext29_cifar10_fig7"
    for c, w, err in [(1, 64, 4.5), (2, 64, 4.1), (4, 64, 3.9), (1, 128, 4.3), (1, 192, 4.2)]:
        write_run(sweep / f"model.cardinality={c},model.width={w}",
                  ["+recipe=resnext29_cifar10_fig7", f"model.cardinality={c}", f"model.width={w}"],
                  [epoch(0, err + 5), epoch(1, err)])
    res = report(sweep, out=tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert len(rows(tmp_path / "out")) == 5
    assert all(float(r["params_m"]) > 1 for r in rows(tmp_path / "out").values())  # measured from the config
    with Image.open(tmp_path / "out" / "fig7.png") as im:
        assert im.size == (900, 550)
    from resnext.report import find_runs, summarize
    from resnext.report_plots import families

    runs = find_runs([str(sweep)])
    fams = families(runs, [summarize(r) for r in runs])
    assert sorted(len(v) for v in fams.values()) == [3, 3]  # C grows at d=64; width grows at C=1


def test_bad_input_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for p, expect in [(tmp_path / "missing", "no such file or folder"), (tmp_path / "empty", "not a run directory")]:
        res = report(p, out=tmp_path / "out")
        assert res.returncode == 2 and expect in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.stderr
