"""`resnext.report`: table values parsed back from the CSV, figures decode at their size, odd runs shown."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess

import matplotlib.axes
import pytest
from cifar_helpers import write_cifar10
from omegaconf import OmegaConf
from PIL import Image
from runs import PY, ROOT, env, records

from resnext.compose import compose_config
from resnext.models import build_model
from resnext.models.complexity import measure
from resnext.report import find_runs, main, summarize
from resnext.report_plots import SIZE_PX, families

FIG7 = "+recipe=resnext29_cifar10_fig7"


def write_run(d, overrides, recs, paper=True):
    """A run directory as the trainer leaves it: the resolved config.yaml and (unless None) metrics.jsonl."""
    d.mkdir(parents=True)
    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True)
    if not paper:
        del cfg["paper"]
    (d / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if recs is not None:
        (d / "metrics.jsonl").write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in recs))
    return d


def start(t, world=1, precision="fp32"):
    return {"kind": "start", "time": t, "world_size": world, "device": "cpu", "precision": precision,
            "channels_last": False, "params": 1, "macs": 1, "epochs": 100, "start_step": 0}


def epoch(i, val=None, top5=None, train=50.0, ips=100.0):
    rec = {"kind": "epoch", "epoch": i, "step": 10 * (i + 1), "lr": 0.1, "train_loss": 1.0, "train_top1_err": train,
           "train_top5_err": 10.0, "images_per_s": ips, "epoch_time": 60.0, "wall_time": 1800.0 * (i + 1)}
    if val is not None:
        rec.update(val_loss=1.0, val_top1_err=val, val_top5_err=top5)
    return rec


def end(t, status, best=None):
    return {"kind": "end", "time": t, "status": status, "step": 0, "best_val_top1_err": best}


def report_cli(*args, cwd=ROOT):
    return subprocess.run([PY, "-m", "resnext.report", *map(str, args)], capture_output=True, text=True,
                          env=env(), cwd=cwd, timeout=300)


def csv_rows(out):
    with open(out / "report.csv", newline="") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


def num(s):
    return None if s == "" else float(s)


def assert_png(path, colors=()):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == SIZE_PX
        pixels = {c[:3] for _, c in im.convert("RGBA").getcolors(SIZE_PX[0] * SIZE_PX[1])}
    for c in colors:  # a curve in this color was drawn
        assert c in pixels


TAB10 = [(31, 119, 180), (255, 127, 14)]  # matplotlib's first two tab10 colors


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real Hydra multirun of train.py on CIFAR-format data: ResNeXt-29 with C = 1, 2 at d = 4."""
    tmp = tmp_path_factory.mktemp("sweep")
    write_cifar10(tmp / "c10")
    cmd = [PY, str(ROOT / "train.py"), "-m", FIG7, "model.cardinality=1,2", "model.width=4",
           f"data.root={tmp / 'c10'}", f"hydra.sweep.dir={tmp / 'multirun'}", "trainer.epochs=2",
           "trainer.max_steps_per_epoch=3", "data.batch_size=32", "trainer.progress=false", "trainer.device=cpu",
           "trainer.log_every=1", "schedule.milestones=[1]"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "multirun"


@pytest.mark.slow
def test_real_sweep_table_matches_metrics(sweep, tmp_path):
    res = report_cli(sweep, cwd=tmp_path)  # no --out: ./report
    assert res.returncode == 0, res.stderr
    out = tmp_path / "report"
    rows = csv_rows(out)
    assert sorted(rows) == [f"resnext29_cifar10_fig7 (C={c})" for c in (1, 2)]
    for c in (1, 2):
        row = rows[f"resnext29_cifar10_fig7 (C={c})"]
        run_dir = sweep / f"model.cardinality={c}"
        assert row["path"] == str(run_dir)
        epochs = records(run_dir, "epoch")
        (st,) = records(run_dir, "start")
        best = min(epochs, key=lambda e: e["val_top1_err"])
        assert (row["recipe"], row["model"], row["status"]) == (
            "resnext29_cifar10_fig7", f"{'ResNet' if c == 1 else 'ResNeXt'}-29 ({c}x4d)", "finished")
        assert (row["paper_table"], row["paper_row"]) == ("Fig. 7", "ResNeXt-29, d = 64, cardinality swept")
        assert [row[k] for k in ("paper_top1", "paper_top5", "diff_top1", "diff_top5")] == ["", "", "", ""]
        assert (num(row["best_epoch_top1"]), num(row["best_epoch_top5"])) == (best["val_top1_err"],
                                                                             best["val_top5_err"])
        assert row["best_epoch"] == str(best["epoch"] + 1)
        assert (num(row["final_top1"]), num(row["final_top5"])) == (epochs[-1]["val_top1_err"],
                                                                   epochs[-1]["val_top5_err"])
        assert (row["epochs_done"], row["epochs_planned"]) == ("2", "2")
        assert num(row["wall_s"]) == epochs[-1]["wall_time"]
        assert num(row["images_per_s"]) == pytest.approx(statistics.median(e["images_per_s"] for e in epochs))
        assert (row["world_size"], row["precision"]) == (str(st["world_size"]), st["precision"]) == ("1", "fp32")
        # measured from config.yaml's model at data.image_size: the same numbers the trainer logged
        assert num(row["params_m"]) == pytest.approx(st["params"] / 1e6, abs=1e-9)
        assert num(row["gflops"]) == pytest.approx(st["macs"] / 1e9, abs=1e-12)
    md = (out / "report.md").read_text()
    assert md in res.stdout and "| resnext29_cifar10_fig7 (C=2) | resnext29_cifar10_fig7 |" in md
    assert_png(out / "curves.png", TAB10)
    assert_png(out / "fig7.png", TAB10[:1])
    runs = find_runs([str(sweep)])
    (fam,) = families(runs, [summarize(r) for r in runs]).items()
    assert fam[0] == "cifar10 ResNeXt-29: width d=4, C varies"
    assert [p[2].cfg.model.cardinality for p in fam[1]] == [1, 2]


def test_unfinished_and_odd_runs_are_shown(tmp_path, capsys):
    t = tmp_path / "runs"
    write_run(t / "x50", ["+recipe=resnext50_32x4d_imagenet"], [  # resumed at 16 GPUs, then preempted
        start(1.0, 8, "bf16"), epoch(0, 30.0, 11.0, ips=1000), epoch(1, 26.0, 8.0),
        start(2.0, 16, "bf16"), epoch(1, 24.0, 7.0, ips=1200), epoch(2, 25.0, 7.5, ips=1100),
        '{"kind": "step", "epoch": 3, "st\n', end(3.0, "preempted", 24.0)])
    write_run(t / "nested" / "deeper" / "r101", ["+recipe=resnet101_imagenet"], [
        start(1.0), epoch(0, train=60.0), epoch(1, 40.0, 15.0, train=45.0)])  # running: no end record
    write_run(t / "nopaper", ["+recipe=resnet50_imagenet", "trainer.epochs=3"], None, paper=False)
    write_run(t / "failed", ["+recipe=resnet200_imagenet"], [start(1.0), end(2.0, "failed")])
    write_run(t / "empty", ["+recipe=resnext101_64x4d_imagenet"], [])
    write_run(t / "stopped", ["+recipe=resnext101_32x4d_imagenet"], [start(1.0), end(2.0, "finished"), start(3.0)])
    (t / ".hidden" / "config.yaml").parent.mkdir()
    (t / ".hidden" / "config.yaml").write_text("not: a run\n")
    assert main([str(t), str(t / "x50"), "--out", str(tmp_path / "out")]) == 0
    rows = csv_rows(tmp_path / "out")
    names = {"resnext50_32x4d_imagenet", "resnet101_imagenet", "resnet50_imagenet", "resnet200_imagenet",
             "resnext101_64x4d_imagenet", "resnext101_32x4d_imagenet"}
    assert set(rows) == names  # each run once, nothing from .hidden/
    x = rows["resnext50_32x4d_imagenet"]
    assert (x["status"], x["paper_table"], x["paper_row"], x["model"]) == (
        "preempted", "Table 3", "ResNeXt-50 32x4d", "ResNeXt-50 (32x4d)")
    assert (num(x["paper_top1"]), x["paper_top5"]) == (22.2, "")
    assert (num(x["best_epoch_top1"]), num(x["best_epoch_top5"]), num(x["final_top1"]), num(x["final_top5"])) == (
        24.0, 7.0, 25.0, 7.5)
    assert x["best_epoch"] == "2"  # the resumed epoch 1 (0-based) replaced the first one
    assert x["diff_top1"] == x["diff_top5"] == ""  # preempted: not compared with the paper
    cx = measure(lambda: build_model(dict(arch="resnext", depth=50, cardinality=32, width=4, num_classes=1000,
                                          zero_init_last_bn=False, shortcut=True)), 224)
    assert (num(x["params_m"]), num(x["gflops"])) == (cx.params / 1e6, cx.gflops)
    assert num(x["params_m"]) == pytest.approx(25.028904)  # not the start records' params=1
    assert (x["epochs_done"], x["epochs_planned"], num(x["wall_s"])) == ("3", "100", 5400.0)
    assert num(x["images_per_s"]) == 1100  # median of the epochs kept: 1000, 1200 (resumed epoch 1), 1100
    assert (x["world_size"], x["precision"]) == ("8/16", "bf16")
    r = rows["resnet101_imagenet"]
    assert (r["status"], num(r["best_epoch_top1"]), num(r["final_top5"]), r["epochs_done"]) == (
        "running-or-stopped", 40.0, 15.0, "2")
    n = rows["resnet50_imagenet"]  # a config without a paper block and a run without metrics
    assert (n["status"], n["paper_table"], n["paper_top1"], n["best_epoch_top1"], n["world_size"]) == (
        "no metrics", "", "", "", "")
    assert (n["epochs_done"], n["epochs_planned"], n["model"]) == ("", "3", "ResNet-50 (1x64d)")
    assert num(n["params_m"]) == pytest.approx(25.557032)  # measured even without metrics
    assert (rows["resnet200_imagenet"]["status"], rows["resnet200_imagenet"]["epochs_done"]) == ("failed", "0")
    assert rows["resnext101_64x4d_imagenet"]["status"] == "no metrics"  # an empty metrics.jsonl
    assert rows["resnext101_32x4d_imagenet"]["status"] == "running-or-stopped"  # started again after its end
    md = (tmp_path / "out" / "report.md").read_text()
    assert md in capsys.readouterr().out
    lines = {line.split(" | ")[0][2:]: line for line in md.splitlines()[2:]}
    n = lines["resnet50_imagenet"]
    assert n.startswith("| resnet50_imagenet | resnet50_imagenet | ResNet-50 (1x64d) | no metrics | - | - | - | - |")
    assert n.endswith("| -/3 | - | - | - | - |")
    assert "| 22.20 | - | 25.00 | 7.50 | 1 | - | - | 2 | 24.00 | 7.00 | 25.03 | 4.23 | 3/100 | 1:30:00 | 1100 | 8/16 | bf16 |" \
        in lines["resnext50_32x4d_imagenet"]
    assert "None" not in md and "nan" not in md.lower()
    assert_png(tmp_path / "out" / "curves.png", TAB10)
    assert not (tmp_path / "out" / "fig7.png").exists()  # no CIFAR sweep here


def test_paper_is_compared_with_the_final_model(tmp_path):
    """A finished run whose best epoch is not its last: the headline and the paper difference are the final
    model's; the best epoch is shown apart, labelled as chosen on the evaluation set."""
    write_run(tmp_path / "x50", ["+recipe=resnext50_32x4d_imagenet", "trainer.epochs=3"], [
        start(1.0), epoch(0, 24.0, 8.0), epoch(1, 22.5, 6.2), epoch(2, 22.9, 6.4), end(2.0, "finished", 22.5)])
    assert main([str(tmp_path / "x50"), "--out", str(tmp_path / "out")]) == 0
    (row,) = csv_rows(tmp_path / "out").values()
    assert (num(row["final_top1"]), num(row["final_top5"])) == (22.9, 6.4)
    assert num(row["diff_top1"]) == pytest.approx(22.9 - 22.2)  # final - paper, not best - paper
    assert (row["best_epoch"], num(row["best_epoch_top1"]), num(row["best_epoch_top5"])) == ("2", 22.5, 6.2)
    md = (tmp_path / "out" / "report.md").read_text()
    header = [h.strip() for h in md.splitlines()[0].strip("|").split("|")]
    assert header[header.index("final top-1"):header.index("final top-1") + 8] == [
        "final top-1", "final top-5", "n", "final - paper top-1", "final - paper top-5", "best epoch (chosen on val)",
        "best-epoch top-1", "best-epoch top-5"]
    assert "| 22.20 | - | 22.90 | 6.40 | 1 | +0.70 | - | 2 | 22.50 | 6.20 |" in md


def test_cifar_sweep_families_and_fig7(tmp_path):
    m = tmp_path / "multirun"
    for c, w, err, seed, recs_end in [(1, 64, 4.5, 0, True), (2, 64, 4.1, 0, True), (4, 64, 3.9, 0, False),
                                      (4, 64, 3.7, 1, True), (1, 128, 4.3, 0, True), (1, 192, 4.2, 0, True)]:
        recs = [start(1.0), epoch(0, err + 5, 1.0), epoch(1, err, 1.0)] + ([end(2.0, "finished")] if recs_end else [])
        write_run(m / f"c{c}_w{w}_s{seed}", [FIG7, f"model.cardinality={c}", f"model.width={w}",
                                             f"trainer.seed={seed}"], recs)
    write_run(m / "other_epochs", [FIG7, "model.cardinality=8", "trainer.epochs=10"], [epoch(0, 3.0, 1.0)])
    write_run(m / "digits", ["+recipe=resnext29_demo_digits"], [epoch(0, 3.0, 1.0)])
    runs = find_runs([str(m)])
    rows = [summarize(r) for r in runs]
    fams = families(runs, rows)
    assert sorted(fams) == ["cifar10 ResNeXt-29: C=1, width varies", "cifar10 ResNeXt-29: width d=64, C varies"]
    c_varies = fams["cifar10 ResNeXt-29: width d=64, C varies"]
    assert [(p[2].cfg.model.cardinality, p[1]) for p in c_varies] == [(1, 4.5), (2, 4.1), (4, 3.7), (4, 3.9)]
    assert [p[0] for p in c_varies] == sorted(p[0] for p in c_varies) and c_varies[0][0] > 1  # params (M)
    w_varies = fams["cifar10 ResNeXt-29: C=1, width varies"]
    assert [p[2].cfg.model.width for p in w_varies] == [64, 128, 192]
    assert main([str(m), "--out", str(tmp_path / "out")]) == 0
    assert_png(tmp_path / "out" / "fig7.png", TAB10)
    assert main([str(m / "digits"), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "fig7.png").exists()  # a stale figure is not left beside a new table


@pytest.mark.slow
def test_real_seed_sweep_one_run_dir_per_seed_grouped_in_the_table(tmp_path):
    """`train.py -m ... trainer.seed=1,2,3` trains each seed in its own run directory; the report adds one row
    for the three: mean final error, its standard error and n, computed from their metrics."""
    sweep = tmp_path / "multirun"
    cmd = [PY, str(ROOT / "train.py"), "-m", "+recipe=resnext29_demo_digits", "model.cardinality=2",
           "model.width=2", "schedule.warmup_epochs=0", "trainer.epochs=1", "trainer.max_steps_per_epoch=3",
           "trainer.progress=false", "trainer.seed=1,2,3", f"hydra.sweep.dir={sweep}"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    dirs = sorted(p for p in sweep.iterdir() if (p / "config.yaml").is_file())
    assert [d.name.rsplit(",", 1)[-1] for d in dirs] == ["trainer.seed=1", "trainer.seed=2", "trainer.seed=3"]
    assert [OmegaConf.load(d / "config.yaml").trainer.seed for d in dirs] == [1, 2, 3]
    finals = [records(d, "epoch")[-1] for d in dirs]
    assert report_cli(sweep, "--out", tmp_path / "out").returncode == 0
    rows = csv_rows(tmp_path / "out")
    group = "resnext29_demo_digits [mean of seeds 1, 2, 3]"
    assert list(rows) == [f"resnext29_demo_digits (seed={s})" for s in (1, 2, 3)] + [group]
    for s, final in zip((1, 2, 3), finals, strict=True):
        r = rows[f"resnext29_demo_digits (seed={s})"]
        assert (num(r["final_top1"]), r["n"], r["seeds"], r["final_top1_se"]) == (final["val_top1_err"], "1", str(s), "")
    g = rows[group]
    for k in ("top1", "top5"):
        values = [f[f"val_{k}_err"] for f in finals]
        assert num(g[f"final_{k}"]) == pytest.approx(statistics.mean(values), abs=1e-12)
        assert num(g[f"final_{k}_se"]) == pytest.approx(statistics.stdev(values) / 3 ** 0.5, abs=1e-12)
    assert (g["n"], g["seeds"], g["status"], g["path"], g["best_epoch"]) == ("3", "1, 2, 3", "finished", str(sweep), "")
    md = (tmp_path / "out" / "report.md").read_text()
    top1 = [f["val_top1_err"] for f in finals]
    se = statistics.stdev(top1) / 3 ** 0.5
    assert f"| {group} | resnext29_demo_digits |" in md and f"| {statistics.mean(top1):.2f} ± {se:.2f} |" in md


def test_seed_groups_rows_and_fig7_error_bars(tmp_path, monkeypatch):
    m = tmp_path / "multirun"
    for c, seed, err, done in [(1, 1, 4.6, True), (1, 2, 4.4, True), (1, 3, 4.2, True), (2, 1, 4.0, True),
                               (2, 2, 3.6, False)]:
        recs = [start(1.0), epoch(0, err + 1, 1.0), epoch(1, err, 0.5 + seed)] + ([end(2.0, "finished")] if done else [])
        write_run(m / f"c{c}_s{seed}", [FIG7, f"model.cardinality={c}", f"trainer.seed={seed}"], recs)
    write_run(m / "lone", [FIG7, "model.cardinality=4", "trainer.seed=5"], [epoch(0, 3.5, 1.0)])
    bars = []
    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar",
                        lambda ax, x, y, yerr=None, **kw: bars.append((list(x), list(y), list(yerr))) or real(
                            ax, x, y, yerr=yerr, **kw))
    assert main([str(m), "--out", str(tmp_path / "out")]) == 0
    rows = csv_rows(tmp_path / "out")
    c1 = rows["resnext29_cifar10_fig7 (C=1) [mean of seeds 1, 2, 3]"]
    assert (num(c1["final_top1"]), num(c1["final_top1_se"]), c1["n"], c1["status"]) == (
        pytest.approx(4.4), pytest.approx(0.2 / 3 ** 0.5), "3", "finished")  # stdev of 4.6, 4.4, 4.2 is 0.2
    assert (num(c1["final_top5"]), num(c1["final_top5_se"])) == (pytest.approx(2.5), pytest.approx(1 / 3 ** 0.5))
    c2 = rows["resnext29_cifar10_fig7 (C=2) [mean of seeds 1, 2]"]
    assert (num(c2["final_top1"]), num(c2["final_top1_se"]), c2["n"], c2["status"]) == (
        pytest.approx(3.8), pytest.approx(0.2), "2", "1/2 finished")
    assert not any("mean of seeds 5" in r for r in rows)  # one seed: no group row
    order = list(rows)
    assert order.index("resnext29_cifar10_fig7 (C=1) [mean of seeds 1, 2, 3]") == order.index(
        "resnext29_cifar10_fig7 (C=1, seed=3)") + 1  # right after its last member
    (xs, means, errs), = bars  # one family (C varies at d=64), its seeds averaged, one bar per model
    assert means == pytest.approx([4.4, 3.8, 3.5]) and errs == pytest.approx([0.2 / 3 ** 0.5, 0.2, 0.0])
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert_png(tmp_path / "out" / "fig7.png", TAB10[:1])


def test_bad_input_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "no_runs" / "sub").mkdir(parents=True)
    (tmp_path / "no_runs" / "sub" / "notes.txt").write_text("x")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "config.yaml").write_text("model: [unclosed\n")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "config.yaml").write_text("- a list\n")
    good = write_run(tmp_path / "good", ["+recipe=resnext29_demo_digits"], None)
    cases = [([tmp_path / "missing"], "missing: no such file or folder"),
             ([tmp_path / "empty"], "empty: not a run directory and holds none"),
             ([tmp_path / "a_file.txt"], "a_file.txt: is a file"),
             ([good, tmp_path / "no_runs"], "no_runs: not a run directory"),
             ([tmp_path / "garbage"], "garbage/config.yaml: unreadable"),
             ([tmp_path / "notarun"], "notarun/config.yaml: not a run's config"),
             ([good, "--out", tmp_path / "a_file.txt"], "--out " + str(tmp_path / "a_file.txt") + ": is a file"),
             ([good, "--out", "/proc/report"], "--out /proc/report cannot be created in /proc"),
             ([good, "--out", tmp_path / "a_file.txt" / "sub"], "a_file.txt is a file, so the folder cannot be created")]
    for args, expect in cases:
        res = report_cli(*args, "--out", tmp_path / "out") if "--out" not in args else report_cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error: ") and expect in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert res.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_params_of_a_from_data_run_are_the_ones_the_trainer_measured(tmp_path):
    """model.num_classes=0 (from the folder): the report takes the trainer's own count, not 1000 classes."""
    from omegaconf import OmegaConf

    from resnext.report import Run, complexity

    cfg = OmegaConf.create({"model": {"arch": "resnet", "depth": 18, "num_classes": 0},
                            "data": {"dataset": "imagenet", "image_size": 64}})
    run = Run(tmp_path, cfg, [{"kind": "start", "params": 11_181_642, "macs": 148_000_000}])
    assert complexity(run) == (11.181642, 0.148)


def test_metrics_of_the_wrong_type_are_named_and_skipped(tmp_path):
    """A record whose fields the report reads have other types (status 5, an error as a string) is skipped
    and named by file and line; the run's good records still count; with nothing usable at all, exit 2."""
    good = write_run(tmp_path / "good", ["+recipe=resnext29_demo_digits"],
                     [start(1), epoch(0, val=20.0, top5=1.0), end(2, "finished")])
    bad = write_run(tmp_path / "bad", ["+recipe=resnext29_demo_digits", "trainer.seed=1"],
                    [start(1), epoch(0, val="20", top5=1.0), end(2, 5), "[1, 2]\n", {"kind": 3},
                     epoch(1, val=30.0, top5=True), "{cut by a kill"])
    res = report_cli(good, bad, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    metrics = bad / "metrics.jsonl"
    assert res.stderr.splitlines() == [
        f"warning: {metrics}:2: epoch field 'val_top1_err' is '20', expected a number; skipped",
        f"warning: {metrics}:3: end field 'status' is 5, expected a string; skipped",
        f"warning: {metrics}:4: a list, not a record; skipped",
        f"warning: {metrics}:5: kind 3 is not a string; skipped",
        f"warning: {metrics}:6: epoch field 'val_top5_err' is True, expected a number; skipped"]
    rows = {r["path"]: r for r in csv_rows(tmp_path / "out").values()}
    assert rows[str(good)]["status"] == "finished" and rows[str(good)]["final_top1"] == "20.0"
    assert rows[str(bad)]["status"] == "running-or-stopped" and rows[str(bad)]["final_top1"] == ""  # not "5", "20"
    only_bad = write_run(tmp_path / "only_bad", ["+recipe=resnext29_demo_digits"], [end(2, 5)])
    res = report_cli(only_bad, "--out", tmp_path / "out2")
    assert res.returncode == 2 and res.stderr.splitlines()[-1] == (
        f"error: nothing to report: every metrics record is unusable (first: {only_bad / 'metrics.jsonl'}:1: "
        "end field 'status' is 5, expected a string; skipped)")
    assert not (tmp_path / "out2").exists()


def test_a_planted_link_among_the_report_files_is_refused(tmp_path):
    """--out holding report.csv as a symbolic link to another file: refused in one line, the other file intact."""
    good = write_run(tmp_path / "good", ["+recipe=resnext29_demo_digits"], [start(1), epoch(0, val=20.0, top5=1.0)])
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("keep")
    (out / "report.csv").symlink_to(tmp_path / "precious.txt")
    res = report_cli(good, "--out", out)
    assert res.returncode == 2 and res.stderr.splitlines() == [
        f"error: --out {out}: report.csv is a symbolic link; links are not followed (remove it, or give another --out)"]
    assert (tmp_path / "precious.txt").read_text() == "keep" and not (out / "report.md").exists()

