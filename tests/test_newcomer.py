"""The newcomer's path: every key listed with its meaning, Hydra's showing flags without data.root, the README's
command for one's own ImageNet-layout folder (classes and evaluation sizes derived)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess

import pytest
import torch
import yaml
from runs import PY, ROOT, TINY, env, records

from resnext.config import Config
from resnext.info import field_comments, key_rows
from resnext.models import FAMILIES


def test_info_keys_lists_every_key_with_its_default_and_comment():
    rows = key_rows()
    shown = {k: (v, c) for k, v, c in rows if not k.startswith("model=")}
    expected = {"name"}
    for f in dataclasses.fields(Config):
        if f.default_factory is not dataclasses.MISSING and f.name != "model":
            expected |= {f"{f.name}.{g.name}" for g in dataclasses.fields(type(f.default_factory()))}
    assert expected <= shown.keys(), expected - shown.keys()
    missing = [k for k, (_, c) in shown.items() if not c]
    assert not missing, f"keys without a one-line comment: {missing}"
    assert shown["data.batch_size"] == ("256", "global mini-batch over all ranks (split evenly between them)")
    assert shown["schedule.milestones"][0] == "[30, 60, 90]" and shown["data.root"][0] == "null"
    # each family's node, with the defaults its conf/model/<family>.yaml gives
    headers = [k for k, _, _ in rows if k.startswith("model=")]
    assert headers == [f"model={name}" for name in FAMILIES]
    for name, family in FAMILIES.items():
        start = [k for k, _, _ in rows].index(f"model={name}")
        block = rows[start + 1:start + 1 + len(family.keys())]
        assert [k for k, _, _ in block] == [f"model.{k}" for k in family.keys()]
        assert block[0][1] == name and all(c for _, _, c in block)
        assert set(field_comments(family.config)) == set(family.keys())


def test_info_keys_command_prints_them():
    res = subprocess.run([PY, "-m", "resnext.info", "--keys"], capture_output=True, text=True, env=env(),
                         timeout=120)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("trainer.log_every "))
    assert line.split()[1] == "50" and "steps between metrics.jsonl" in line
    assert "model=wrn: Wide ResNet" in res.stdout


@pytest.mark.parametrize("args, expect", [
    (["--help"], "python -m resnext.info --keys"),
    (["--hydra-help"], "--cfg,-c"),
    (["--info"], "Config search path"),
    (["--cfg", "job", "+recipe=resnext50_32x4d_imagenet"], "name: resnext50_32x4d_imagenet"),
    (["--cfg", "job", "--resolve", "+recipe=resnext29_demo_digits", "optim.lr=0.3"], "lr: 0.3"),
    (["-c", "job", "-p", "model", "+recipe=resnext50_32x4d_imagenet"], "cardinality: 32"),
])
def test_hydra_showing_flags_work_without_data_root(tmp_path, args, expect):
    res = subprocess.run([PY, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert expect in res.stdout and "error" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
    if args[0] == "--cfg" and "-p" not in args:
        cfg = yaml.safe_load(res.stdout)
        assert cfg["data"]["root"] is None and "hydra" not in cfg


def test_a_bad_override_is_still_refused_before_hydra(tmp_path):
    res = subprocess.run([PY, str(ROOT / "train.py"), "+recipe=resnext29_demo_digits", "model.cardnality=4"],
                         capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: unknown key model.cardnality")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- your own images

def readme_command(heading: str) -> list[str]:
    """The train.py arguments of the first bash block under a README heading (continuation lines joined)."""
    section = (ROOT / "README.md").read_text().split(f"### {heading}\n", 1)[1]
    words = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ").split()
    assert words[:2] == ["python", "train.py"], words
    return words[2:]


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """A 10-class ImageNet-layout folder made by the data tool."""
    root = tmp_path_factory.mktemp("own") / "folder"
    subprocess.run([PY, "-m", "resnext.data", "make-fake", str(root), "--classes", "10", "--per-class", "4",
                    "--val-per-class", "2", "--size", "48x40"], check=True, env=env(), capture_output=True)
    return root


def test_readme_own_folder_command_trains_with_the_folders_classes(own_folder, tmp_path):
    tiny = {"data.image_size": "32", "data.batch_size": "8", "trainer.epochs": "1"}  # the command's own options
    args = [a.replace("/my/folder", str(own_folder)) for a in readme_command("Train on your own images")]
    assert {a.split("=", 1)[0] for a in args} >= set(tiny), args
    args = [f"{a.split('=', 1)[0]}={tiny[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in tiny else a for a in args]
    res = subprocess.run([PY, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "outputs" / "my_images"
    assert "  data: imagenet, 10 classes (n00000000, n00000001, n00000002, n00000003, ...), 32 px training crops, " \
        "evaluation: shorter side 37, center 32 px; " \
        "1 CPU thread(s) and " in res.stdout, res.stdout  # OMP_NUM_THREADS=1 (env()) is honoured
    saved = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["model"]["fc.weight"].shape == (10, 512) and saved["model_config"]["arch"] == "resnet"
    assert saved["model_config"]["depth"] == 18 and saved["model_config"]["num_classes"] == 10
    [epoch] = records(run, "epoch")
    assert epoch["step"] == 5 and epoch["val_top1_err"] is not None  # 40 images / 8
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["data"]["val_resize"], config["data"]["val_crop"]) == (37, 32)  # written resolved
    # extended with the class count spelled out (as a run saved before counts came from the folder has it):
    # 0 ("from the data") and the folder's 10 are the same setting, not a change to refuse
    more = [a.replace("trainer.epochs=1", "trainer.epochs=2") for a in args] + ["model.num_classes=10"]
    res = subprocess.run([PY, str(ROOT / "train.py"), *more], capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert [e["epoch"] for e in records(run, "epoch")] == [0, 1] and "model.num_classes" not in res.stdout


def test_a_recipe_pinning_1000_classes_refuses_a_10_class_folder(own_folder, tmp_path):
    res = subprocess.run([PY, str(ROOT / "train.py"), "+recipe=resnet50_imagenet", f"data.root={own_folder}",
                          "data.batch_size=8", "trainer.device=cpu"], capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "model.num_classes=1000 but the data set has 10 classes" in res.stderr


@pytest.mark.parametrize("overrides, sizes", [
    ([], (256, 224)), (["data.image_size=160"], (183, 160)), (["data.image_size=64", "data.val_crop=56"], (73, 56)),
    (["data.val_resize=320", "data.val_crop=320"], (320, 320)), (["+recipe=resnext101_64x4d_320crop_imagenet"],
                                                                 (320, 320)),
    (["+recipe=resnext50_32x4d_imagenet"], (256, 224)), (["+recipe=resnext29_demo_digits"], (16, 16)),
])
def test_evaluation_sizes_follow_the_training_crop_unless_set(overrides, sizes):
    from resnext.compose import compose_config

    d = compose_config(overrides).data
    assert (d.val_resize, d.val_crop) == sizes


def test_family_defaults_take_the_class_count_from_the_data():
    from resnext.compose import compose_config

    for family in ("resnet", "resnext", "preresnet"):
        assert compose_config([f"model={family}"]).model.num_classes == 0
    assert compose_config(["+recipe=resnext50_32x4d_imagenet"]).model.num_classes == 1000


# ---------------------------------------------------------------- progress without a terminal

def test_train_with_stderr_to_a_file_prints_plain_progress_lines(tmp_path):
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:
        res = subprocess.run([PY, str(ROOT / "train.py"), *TINY, "trainer.progress=true", "trainer.epochs=2",
                              "trainer.max_steps_per_epoch=3", f"hydra.run.dir={tmp_path / 'run'}"],
                             stdout=subprocess.PIPE, stderr=f, text=True, env=env(), timeout=300)
    assert res.returncode == 0, err.read_text()
    assert "\r" not in err.read_text() and "\r" not in res.stdout
    plain = [ln for ln in res.stdout.splitlines() if " step " in ln and "epoch ETA" in ln]
    assert [ln.split(":")[0] for ln in plain] == ["epoch 1/2 step 1/3", "epoch 2/2 step 1/3"], res.stdout
    assert re.search(r"loss \d+\.\d{3}, lr [\d.e-]+, \d+ images/s, epoch ETA \d:\d\d:\d\d$", plain[0]), plain[0]
    epochs = [ln for ln in res.stdout.splitlines() if ln.startswith("epoch ") and "train loss" in ln]
    assert len(epochs) == 2 and all(re.search(r", \d+\.\d s at \d+ images/s;  val top-1 error", ln) for ln in epochs)


def test_plain_progress_lines_are_throttled(tmp_path, monkeypatch, capsys):
    from resnext.engine import logging as runlog

    clock = [100.0]
    monkeypatch.setattr(runlog.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(runlog.sys.stderr, "isatty", lambda: False)
    log = runlog.RunLog(tmp_path, enabled=True, progress=True)
    log.start_bar(100, 0, "epoch 1/3")
    for step in range(1, 101):
        clock[0] += 1.0  # one second a step
        log.advance()
        if step % 10 == 0:  # a log step brings the values
            log.advance(0, loss="1.234", lr="0.1", img_s="32")
    log.close()
    lines = capsys.readouterr().out.splitlines()
    # the first log step, then one per 30 s at the log steps: steps 10, 40, 70, 100
    assert [ln.split(":")[0] for ln in lines] == [f"epoch 1/3 step {n}/100" for n in (10, 40, 70, 100)]
    assert lines[0] == "epoch 1/3 step 10/100: loss 1.234, lr 0.1, 32 images/s, epoch ETA 0:01:30"
    assert lines[-1].endswith("epoch ETA 0:00:00")


# ---------------------------------------------------------------- multirun directories

def test_sweep_run_directories_are_named_by_the_swept_keys_only(tmp_path):
    fixed = [o for o in TINY if not o.startswith(("model.cardinality=", "schedule.milestones="))]
    res = subprocess.run([PY, str(ROOT / "train.py"), "-m", *fixed, "data.root=/unused", "trainer.epochs=1",
                          "trainer.max_steps_per_epoch=1", "schedule.milestones=[1]", "model.cardinality=1,2"],
                         capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    sweep = tmp_path / "multirun" / "resnext29_demo_digits"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["model.cardinality=1", "model.cardinality=2"]
    for c in (1, 2):
        run = sweep / f"model.cardinality={c}"
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["cardinality"] == c
        assert records(run, "end")[-1]["status"] == "finished"


def test_sweep_dirname_excludes_every_key_given_one_value():
    from resnext.compose import sweep_dirname

    argv = ["-m", "+recipe=r", "data.root=/d", "model.cardinality=1,2", "optim.lr=range(1,3)", "hydra.verbose=true"]
    assert sweep_dirname(argv) == ["hydra.job.config.override_dirname.exclude_keys=['data.root','recipe']"]
    assert sweep_dirname(argv[1:]) == []  # not a multirun
    assert sweep_dirname([*argv, "hydra.job.config.override_dirname.exclude_keys=[x]"]) == []  # the user's own


# ---------------------------------------------------------------- threads and loader workers

def test_threads_and_workers_follow_the_cores_this_process_may_use(monkeypatch):
    from resnext import config
    from resnext.compose import compose_config

    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    folder = compose_config(["data.root=/d"])
    digits = compose_config(["+recipe=resnext29_demo_digits"])
    assert (folder.data.workers, config.threads_for(folder)) == (8, 8)  # 16 cores: 8 loader workers at most
    assert config.threads_for(digits) == 16  # in-memory data: no loader workers beside training
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc_per_node=4: 4 cores each
    assert (folder.data.workers, config.threads_for(folder), config.threads_for(digits)) == (3, 1, 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # one core each: load in the main process
    assert (folder.data.workers, config.threads_for(folder)) == (0, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert config.threads_for(folder) == 3  # the environment's explicit choice
    assert config.threads_for(compose_config(["data.root=/d", "trainer.threads=5"])) == 5
    assert compose_config(["data.root=/d", "data.workers=0"]).data.workers == 0  # 0 = in the main process
    with pytest.raises(config.ConfigError, match="trainer.threads=-1 must be >= 0"):
        config.validate(compose_config(["data.root=/d", "trainer.threads=-1"]))


# ---------------------------------------------------------------- torch.hub pretrained=True

@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_hub_pretrained_true_says_how_to_pass_weights(name):
    from resnext.errors import NoPublishedWeights, UserError

    with pytest.raises(NoPublishedWeights) as e:
        torch.hub.load(str(ROOT), name, source="local", pretrained=True, verbose=False)
    assert isinstance(e.value, ValueError) and isinstance(e.value, UserError)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name}: no pretrained weights are published")
    assert "weights='PATH'" in msg and "resnext.loading.load_model" in msg
    with torch.device("meta"):
        model = torch.hub.load(str(ROOT), name, source="local", pretrained=False, verbose=False)
    assert model.fc.out_features == 1000


def test_a_folder_without_val_trains_with_a_recorded_hold_out(own_folder, tmp_path):
    """data.val_fraction=0.25 on a folder without val/: the held-out files are recorded in the run directory,
    a resume after new images arrive holds out the same ones (a fresh choice would take more), and evaluate
    measures on them."""
    import shutil

    from runs import train

    root = tmp_path / "noval"
    shutil.copytree(own_folder / "train", root / "train")
    d = tmp_path / "run"
    args = ["data=imagenet", f"data.root={root}", "data.backend=torch", "model.num_classes=0", "data.batch_size=8",
            "data.image_size=32", "data.val_fraction=0.25", "trainer.max_steps_per_epoch=2"]
    assert train(d, *args, "trainer.epochs=1").returncode == 0
    recorded = (d / "val_holdout.txt").read_text().splitlines()
    assert len(recorded) == 10 and all(line.startswith("train/") for line in recorded)  # 1 of 4 in each of 10
    first = sorted((root / "train" / "n00000000").iterdir())[0]
    for i in range(4):  # a fresh choice over 8 images would hold out 2 of this class
        shutil.copy(first, first.with_name(f"new{i}.JPEG"))
    res = train(d, *args, "trainer.epochs=2")
    assert res.returncode == 0, res.stderr
    assert (d / "val_holdout.txt").read_text().splitlines() == recorded
    [_, second] = records(d, "epoch")
    out = subprocess.run([PY, "-m", "resnext.evaluate", str(d)], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["samples"] == 10 and second["val_top1_err"] is not None
