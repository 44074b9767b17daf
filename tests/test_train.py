"""End-to-end CPU training: resume, metrics/TensorBoard files, one-line errors that change nothing."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
import torch
from cifar_helpers import write_cifar10
from runs import PY, ROOT, env, records, train, weights


def snapshot(d):
    return {p.relative_to(d): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "r"
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=3")
    assert res.returncode == 0, res.stderr
    return d


def test_run_dir_contents(finished_run):
    d = finished_run
    assert (d / "config.yaml").is_file() and (d / "checkpoints" / "last.pt").is_file()
    assert (d / "checkpoints" / "best.pt").is_file() and list((d / "tb").glob("events.*"))
    steps = [r["step"] for r in records(d, "step")]
    assert steps == list(range(1, 7))
    ep = records(d, "epoch")
    assert [r["epoch"] for r in ep] == [0, 1] and all("val_top1_err" in r for r in ep)
    assert records(d, "end")[-1]["status"] == "finished"
    cfg = (d / "config.yaml").read_text()
    assert "cardinality: 2" in cfg and "${" not in cfg  # resolved


def test_tensorboard_scalars_and_hparams_read_back(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(finished_run / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("step/loss", "step/lr", "step/images_per_s", "val/top1_err", "train/top1_err", "train/loss"):
        assert tag in tags, tags
    losses = [e.value for e in acc.Scalars("step/loss")]
    assert losses == pytest.approx([r["loss"] for r in records(finished_run, "step")], rel=1e-6)
    assert [e.step for e in acc.Scalars("val/top1_err")] == [3, 6]
    # HParams: the session-start summary holds the hyper-parameters
    content = acc.PluginTagToContent("hparams")
    assert content, "no hparams plugin data"
    found = {}
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            found = {k: v for k, v in data.session_start_info.hparams.items()}
    assert found["model.cardinality"].number_value == 2
    assert found["optim.nesterov"].number_value == 1  # torch stores bools as numbers
    assert found["data.dataset"].string_value == "digits"


def test_resume_after_epoch_equals_uninterrupted(finished_run, tmp_path):
    d = tmp_path / "resumed"
    first = train(d, "trainer.epochs=1", "trainer.max_steps_per_epoch=3")
    assert first.returncode == 0, first.stderr
    opt_after_1 = torch.load(d / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    second = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=3")
    assert second.returncode == 0, second.stderr
    assert "resuming at epoch 2, step 3" in second.stdout
    # same weights as the run that went straight through 2 epochs
    a, b = weights(finished_run), weights(d)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in records(d, "step")]
    assert steps == list(range(1, 7))  # no duplicated steps
    ref = {r["step"]: r for r in records(finished_run, "step")}
    for r in records(d, "step"):
        assert r["loss"] == ref[r["step"]]["loss"] and r["lr"] == ref[r["step"]]["lr"]
    assert [r["lr"] for r in records(d, "step")][3] == pytest.approx(0.2 * 0.1)  # recipe lr 0.2 per 32 images, batch 32; milestone at epoch 1
    assert len(opt_after_1["state"]) > 0  # momentum buffers were saved and carried over


def test_bad_input_one_line_exit_2_and_run_dir_untouched(finished_run, tmp_path):
    before = snapshot(finished_run)
    write_cifar10(tmp_path / "cifar_ok", 20, 5)
    cases = [
        (["+recipe=resnext99_imagenet"], {}, "unknown recipe 'resnext99_imagenet'; available recipes:"),
        (["+recipe=resnext29_demo_digits", "model.cardnality=4"], {}, "unknown key model.cardnality"),
        (["+recipe=resnext29_demo_digits", "trainer.epochs=two"], {}, "trainer.epochs"),
        (["+recipe=resnext29_demo_digits", "data.batch_size=64"], {"WORLD_SIZE": "3", "RANK": "0"}, "data.batch_size=64"),
        # another recipe on a trained run directory: refused for its settings before any data is read
        (["+recipe=resnext29_8x64d_cifar10", f"data.root={tmp_path / 'nowhere'}", "trainer.device=cpu"], {},
         "the checkpoint is for model model.cardinality=2, model.width=2, this run builds model.cardinality=8"),
        (["+recipe=resnext29_demo_digits", "model.depth=30"], {}, "model.depth must be 9n + 2"),
    ]
    for args, extra, expect in cases:
        res = subprocess.run([PY, str(ROOT / "train.py"), *args, f"hydra.run.dir={finished_run}"],
                             capture_output=True, text=True, env=env(**extra), timeout=120)
        assert res.returncode == 2, (args, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and expect in lines[0], (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert snapshot(finished_run) == before
    fresh = tmp_path / "fresh"  # the same mistake in a new run directory: the data's own error, nothing left
    res = subprocess.run([PY, str(ROOT / "train.py"), "+recipe=resnext29_8x64d_cifar10", f"data.root={tmp_path / 'nowhere'}",
                          "trainer.device=cpu", f"hydra.run.dir={fresh}"], capture_output=True, text=True, env=env(),
                         timeout=120)
    assert res.returncode == 2 and "no cifar10 python batches found" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not fresh.exists()


def test_resume_into_other_architecture_refused(finished_run, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(finished_run, d)
    before = snapshot(d)
    res = train(d, "trainer.epochs=3", "trainer.max_steps_per_epoch=3", "model.cardinality=4")
    assert res.returncode == 2
    assert "checkpoint is for model model.cardinality=2, this run builds model.cardinality=4: another network" \
        in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert snapshot(d) == before


def test_train_from_another_directory(tmp_path):
    res = train(tmp_path / "elsewhere", "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.eval_every=5",
                cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "elsewhere" / "checkpoints" / "last.pt").exists()


def test_training_evaluates_with_ten_crops_when_asked(tmp_path):
    """data.eval_crops=10 in training: the start line says so, and each epoch's val numbers are the
    ten-crop softmax means of the saved model (recomputed here from the crops themselves)."""
    from imagenet_data_helpers import loaders_for

    from resnext.crops import ten_crops
    from resnext.data import Placement
    from resnext.engine.rundir import RunDir
    from resnext.loading import load_model, typed_config

    d = tmp_path / "r"
    res = train(d, "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "data.eval_crops=10", "data.val_crop=12")
    assert res.returncode == 0, res.stderr
    assert ", evaluation: 10 crops of 12 px; " in res.stdout, res.stdout
    [epoch] = records(d, "epoch")
    model = load_model(d).model
    cfg = typed_config(RunDir(d).saved_config(), ["data.eval_crops=1"])  # the whole 16x16 images, cropped here
    val = loaders_for(cfg.data, Placement(0, 1, torch.device("cpu"), torch.float32, False, 0, 0, 0)).val
    hits = n = 0
    with torch.no_grad():
        for x, y in val:
            p = model(ten_crops(x, 12)).softmax(dim=1).view(len(y), 10, -1).mean(dim=1)
            hits, n = hits + (p.argmax(dim=1) == y).sum().item(), n + len(y)
    assert n == 359 and epoch["val_top1_err"] == pytest.approx(100 * (1 - hits / n), abs=1e-9)


def test_extending_a_cosine_run_says_what_happens_to_the_lr(tmp_path):
    """A finished 2-epoch cosine run extended to 4: the schedule is laid over 4 epochs, so the lr at the resumed
    step rises from 0 back to half the peak; the start says so with both values."""
    d = tmp_path / "cos"
    run = ["schedule=cosine", "schedule.warmup_epochs=0", "trainer.max_steps_per_epoch=3", "optim.lr=0.1",
           "optim.ref_batch=32"]
    assert train(d, *run, "trainer.epochs=2").returncode == 0
    res = train(d, *run, "trainer.epochs=4")
    assert res.returncode == 0, res.stderr
    assert "changed since the last start: trainer.epochs: 2 -> 4" in res.stdout
    assert ("  lr at step 6: 0.05 (it was 0 under the saved settings; the cosine schedule is laid over 4 epochs, "
            "ending at 0.001704)") in res.stdout, res.stdout  # 0.05 (1 + cos(pi 11 / 12))


def test_a_finished_or_refused_resume_builds_nothing(finished_run, monkeypatch, capsys):
    """session.run on a finished run directory says so (exit 0) and on a refused resume (a changed lr, not
    accepted) ends in one line (exit 2), both before any data is read or model built (build_parts is never
    reached) and with the run directory untouched."""
    from runs import TINY

    import resnext.session as session
    from resnext.compose import compose_config

    def no_build(*a, **kw):
        raise AssertionError("build_parts was called")

    monkeypatch.setattr(session, "build_parts", no_build)
    before, threads = snapshot(finished_run), torch.get_num_threads()
    try:
        done = compose_config([*TINY, "trainer.epochs=2", "trainer.max_steps_per_epoch=3"])
        assert session.run(done, finished_run) == 0
        assert "already finished (2 epochs)" in capsys.readouterr().out
        changed = compose_config([*TINY, "trainer.epochs=3", "trainer.max_steps_per_epoch=3", "optim.lr=0.5"])
        assert session.run(changed, finished_run) == 2
        assert "optim.lr" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    assert snapshot(finished_run) == before


def test_a_start_builds_its_model_once(tmp_path, monkeypatch, capsys):
    """A training start constructs the model once: the config's check builds it on the meta device (no
    memory, before anything is written) and the session builds it for real; the start line's parameter and
    FLOP counts come from that model (measured on fake tensors), equal to a separate meta build's."""
    from omegaconf import OmegaConf
    from runs import TINY

    import resnext.config
    import resnext.session as session
    from resnext.compose import compose_config
    from resnext.models import build_model
    from resnext.models.complexity import measure

    built = {"check": 0, "session": 0}

    def counted(where):
        def build(*a, **kw):
            built[where] += 1
            return build_model(*a, **kw)
        return build

    monkeypatch.setattr(resnext.config, "build_model", counted("check"))
    monkeypatch.setattr(session, "build_model", counted("session"))
    cfg = compose_config([*TINY, "trainer.epochs=1", "trainer.max_steps_per_epoch=1"])
    threads = torch.get_num_threads()
    try:
        assert session.run(cfg, tmp_path / "run") == 0
    finally:
        torch.set_num_threads(threads)
    assert built == {"check": 1, "session": 1}
    [start] = records(tmp_path / "run", "start")
    cx = measure(lambda: build_model({**OmegaConf.to_container(cfg.model), "num_classes": 10}), cfg.data.image_size)
    assert (start["params"], start["macs"]) == (cx.params, cx.macs) and cx.macs > 0
    assert f"{cx.params / 1e6:.2f}M params, {cx.gflops:.2f} GFLOPs" in capsys.readouterr().out
