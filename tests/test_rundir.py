"""A run directory is sacred: one writer, one configuration, every stop saves, failed saves are one line."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from runs import PY, ROOT, TINY, TORCHRUN, env, hparams, records, train, wait_for_step

from resnext.engine import checkpoint as ckpt
from resnext.errors import EXIT_INTERRUPTED, EXIT_REQUEUE, EXIT_SAVE_FAILED

SHORT = ["trainer.epochs=1", "trainer.max_steps_per_epoch=2"]
LONG = ["trainer.epochs=3", "trainer.max_steps_per_epoch=400"]  # minutes: always stopped by a signal


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*")) if p.is_file()}


def popen(run_dir: Path, *overrides: str, nproc: int = 1) -> subprocess.Popen:
    """train.py (or torchrun) in its own process group, as a terminal or `timeout` would run it."""
    args = [*TINY, f"hydra.run.dir={run_dir}", *overrides]
    cmd = [PY, str(ROOT / "train.py"), *args] if nproc == 1 else [
        TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "train.py"), *args]
    return subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rd") / "done"
    res = train(d, *SHORT)
    assert res.returncode == 0, res.stderr
    return d


def test_second_start_is_refused_naming_the_holder(tmp_path):
    d = tmp_path / "run"
    first = popen(d, *LONG)
    try:
        wait_for_step(d, first)
        second = train(d, *LONG)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another start is training in this run directory" in lines[0]
        assert f"pid {first.pid}" in lines[0]
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    assert first.returncode == EXIT_REQUEUE, err
    starts = records(d, "start")
    assert len(starts) == 1  # the refused start wrote nothing
    assert not list(d.glob("*.tmp")) and not list(d.glob(".*.tmp"))
    assert (d / ".lock").read_text() == ""  # the holder's name went with it
    again = train(d, *LONG, "optim.lr=9")  # gets past the lock: refused for its changed setting instead
    assert again.returncode == 2 and "optim.lr: 0.2 -> 9" in again.stderr, again.stderr


def test_resume_with_other_training_settings_is_refused(done):
    """Refused before anything is built: a model.init_from that does not exist (loaded when the model is
    built) is never reached."""
    before = snapshot(done)
    res = train(done, *SHORT, "optim.lr=5.0", "optim.weight_decay=0.001", "model.init_from=/nonexistent/w.pt")
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "optim.lr: 0.2 -> 5.0" in line and "optim.weight_decay: 0.0005 -> 0.001" in line
    assert "name=NEW" in line and "trainer.accept_changes=[optim.lr,optim.weight_decay]" in line
    assert snapshot(done) == before


def test_finished_run_rerun_says_so_and_touches_nothing(done):
    """Found finished before anything is built: the missing model.init_from file is never opened."""
    before = snapshot(done)
    res = train(done, *SHORT, "data.workers=0", "model.init_from=/nonexistent/w.pt")  # where/how keys may differ
    assert res.returncode == 0, res.stderr
    assert "already finished (1 epochs)" in res.stdout
    assert snapshot(done) == before


def test_extending_and_accepting_changes_are_applied_and_recorded(done, tmp_path):
    d = tmp_path / "ext"
    import shutil

    shutil.copytree(done, d)
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "optim.lr=0.05",
                "trainer.accept_changes=[optim.lr]", "trainer.log_every=2")
    assert res.returncode == 0, res.stderr
    assert "changed since the last start: optim.lr: 0.2 -> 0.05" in res.stdout
    state = torch.load(d / "checkpoints" / "last.pt", weights_only=True)
    assert state["progress"]["epoch"] == 2
    # lr 0.05 per 32 (the demo recipe's ref batch) at batch 32: the new base lr, not the checkpoint's 0.2
    assert {g["base_lr"] for g in state["optimizer"]["param_groups"]} == {0.05}
    kept = (d / "config.step-2.yaml").read_text()
    assert "lr: 0.2" in kept and "epochs: 1" in kept
    now = (d / "config.yaml").read_text()
    assert "lr: 0.05" in now and "epochs: 2" in now
    start = records(d, "start")[-1]
    assert start["changes"]["optim.lr"] == [0.2, 0.05] and start["changes"]["trainer.epochs"] == [1, 2]


def test_files_follow_the_umask(tmp_path):
    d = tmp_path / "perm"
    res = subprocess.run(["bash", "-c", f"umask 022 && exec {PY} {ROOT / 'train.py'} " + " ".join(
        [*TINY, f"hydra.run.dir={d}", *SHORT])], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    for f in (d / "config.yaml", d / "metrics.jsonl", d / "checkpoints" / "last.pt", d / "checkpoints" / "best.pt"):
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_corrupt_last_is_moved_aside_so_the_good_previous_survives(tmp_path):
    d = tmp_path / "ck"
    ckpt.atomic_save({"n": torch.tensor(1)}, d / ckpt.LAST)
    ckpt.atomic_save({"n": torch.tensor(2)}, d / ckpt.LAST, keep_previous=True)
    (d / ckpt.LAST).write_bytes(b"cut short")
    warnings = []
    state, corrupt = ckpt.load_latest(d, warnings.append)
    assert int(state["n"]) == 1 and "falling back to" in warnings[0] and corrupt == d / ckpt.LAST
    assert (d / ckpt.LAST).read_bytes() == b"cut short"  # loading changes nothing
    assert ckpt.move_aside(corrupt).name.startswith("last.pt.corrupt-")
    assert not (d / ckpt.LAST).exists() and len(list(d.glob("last.pt.corrupt-*"))) == 1
    ckpt.atomic_save({"n": torch.tensor(3)}, d / ckpt.LAST, keep_previous=True)  # the next rotation
    assert int(torch.load(d / ckpt.PREVIOUS, weights_only=True)["n"]) == 1  # the good one, not the junk


def test_a_refused_start_leaves_a_corrupt_last_where_it_is(tmp_path):
    """A start that falls back from an unloadable last.pt to last.prev.pt and is then refused (exit 2: a
    changed lr not accepted) changes nothing in the run directory; the start that goes on moves it aside."""
    d = tmp_path / "run"
    first = ["trainer.epochs=2", "trainer.max_steps_per_epoch=2"]
    assert train(d, *first).returncode == 0
    ck = d / "checkpoints"
    (ck / "last.pt").write_bytes(b"cut short")
    before = sorted((p.relative_to(d), p.stat().st_mtime_ns) for p in d.rglob("*"))
    res = train(d, "trainer.epochs=3", "trainer.max_steps_per_epoch=2", "optim.lr=0.5")
    assert res.returncode == 2 and "optim.lr" in res.stderr.splitlines()[-1], res.stderr
    assert sorted((p.relative_to(d), p.stat().st_mtime_ns) for p in d.rglob("*")) == before
    res = train(d, "trainer.epochs=3", "trainer.max_steps_per_epoch=2")
    assert res.returncode == 0, res.stderr
    assert "last.pt moved aside to last.pt.corrupt-" in res.stderr
    assert len(list(ck.glob("last.pt.corrupt-*"))) == 1 and (ck / "last.pt").stat().st_size > 1000


def test_failed_save_is_one_line_exit_4_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    """Injected I/O error on the second save (in process, any user)."""
    from resnext.compose import compose_config
    from resnext.engine.dist import init_world
    from resnext.session import build

    fit = build(compose_config([*TINY, "trainer.epochs=2", "trainer.max_steps_per_epoch=2"]),
                init_world("cpu"), tmp_path)
    real, calls = ckpt.atomic_save, []

    def flaky(obj, path, keep_previous=False):
        calls.append(path)
        if len(calls) > 2:  # epoch 1: last.pt + best.pt; epoch 2's last.pt fails
            raise OSError(errno.EIO, "Input/output error")
        real(obj, path, keep_previous)

    monkeypatch.setattr(ckpt, "atomic_save", flaky)
    outcome = fit.run()
    fit.log.close()
    assert outcome.exit_code == EXIT_SAVE_FAILED
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [f"error: {tmp_path / 'checkpoints' / 'last.pt'}: cannot write the checkpoint (Input/output "
                   f"error); the previous checkpoint is kept (exit {EXIT_SAVE_FAILED})"]
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["progress"]["epoch"] == 1
    end = records(tmp_path, "end")[-1]
    assert end["status"] == "failed" and end["reason"] == "save_failed"


def test_full_disk_on_a_real_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a tmpfs needs root (the injected-error test covers the logic)")
    try:
        d = mnt / "run"
        assert train(d, *SHORT).returncode == 0
        size = (d / "checkpoints" / "last.pt").stat().st_size
        st = os.statvfs(mnt)
        filler = st.f_bavail * st.f_frsize - size // 2  # room for the logs, not for another checkpoint
        with open(mnt / "filler", "wb") as f:
            f.truncate(0)
            f.write(b"\0" * filler)
        res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=2")
        assert res.returncode == EXIT_SAVE_FAILED, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "No space left on device" in lines[0] and "last.pt" in lines[0]
        assert torch.load(d / "checkpoints" / "last.pt", weights_only=True)["progress"]["epoch"] == 1
        assert records(d, "end")[-1]["status"] == "failed"
        assert not list((d / "checkpoints").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)])


def imagenet_overrides(root: Path, backend: str) -> list[str]:
    return ["data=imagenet", f"data.root={root}", f"data.backend={backend}", "model.num_classes=0",
            "data.batch_size=6", "data.image_size=32", "data.val_resize=36", "data.val_crop=32", "data.workers=2",
            "data.pad=0", "data.flip=true", "trainer.epochs=400"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fake") / "imagenet"
    res = subprocess.run([PY, "-m", "resnext.data", "make-fake", str(root), "--classes", "3", "--per-class", "8",
                          "--val-per-class", "2", "--size", "64x48"], capture_output=True, env=env(), cwd=ROOT)
    assert res.returncode == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("source, sig, nproc", [
    ("digits", signal.SIGINT, 1),
    ("torch", signal.SIGTERM, 1),
    ("torch", signal.SIGINT, 1),
    ("dali_cpu", signal.SIGTERM, 1),
    ("digits", signal.SIGTERM, 2),
])
def test_signal_to_the_whole_process_group_saves(source, sig, nproc, folder, tmp_path):
    """What `timeout`, Slurm's cancel and Ctrl-C do: the signal reaches every process, loader workers too."""
    d = tmp_path / "sig"
    extra = LONG if source == "digits" else imagenet_overrides(folder, source)
    proc = popen(d, *extra, nproc=nproc)
    wait_for_step(d, proc)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=180)
    end = records(d, "end")[-1]
    assert end["status"] == "preempted", err
    saved = torch.load(d / "checkpoints" / "last.pt", weights_only=True)["progress"]["global_step"]
    assert f"saved at step {saved}; exit {EXIT_REQUEUE}" in out
    assert hparams(d)["trainer.seed"].number_value == 0  # written at the start, not only at a finish
    if nproc == 1:  # (torchrun exits 1 with its own traceback whenever it was signalled)
        assert proc.returncode == EXIT_REQUEUE and "Traceback" not in err, err
    # what tells a saved preemption from a crash under torchrun too: the run directory's last end record
    status = subprocess.run([PY, "-m", "resnext.status", str(d)], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert status.returncode == EXIT_REQUEUE, status.stdout + status.stderr
    assert status.stdout == f"{d}: preempted after saving: requeue (the same command resumes) at step {saved}\n"


def test_status_gives_each_ending_train_pys_exit_code(tmp_path, capsys):
    from resnext import status

    d = tmp_path / "run"
    d.mkdir()
    for recs, code, says in (
            ([{"kind": "start"}, {"kind": "end", "status": "finished", "reason": "finished", "step": 9}], 0, "finished"),
            ([{"kind": "start"}, {"kind": "end", "status": "failed", "reason": "nonfinite", "step": 4}], 3, "non-finite"),
            ([{"kind": "start"}, {"kind": "end", "status": "failed", "reason": "save_failed", "step": 4}], 4, "written"),
            ([{"kind": "end", "status": "preempted", "reason": "preempted", "step": 3}, {"kind": "start"}], 1, "killed"),
            ([{"kind": "start"}, {"kind": "end", "status": "failed", "reason": "out_of_memory", "step": 0}], 1,
             "ended: out_of_memory")):
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "ep')
        assert status.main([str(d)]) == code
        assert says in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        status.main([str(tmp_path / "none")])
    assert e.value.code == 2 and "no metrics.jsonl" in capsys.readouterr().err


def test_second_ctrl_c_aborts_at_once():
    """The trainer's handler: the first Ctrl-C asks for a save, the second ends the process at once."""
    code = ("import os, signal, time\n"
            "from resnext.engine.stop import StopFlag\n"
            "with StopFlag() as stop:\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.2)\n"
            "    print('requested', stop.requested, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\n"
            "print('not reached')\n")
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60)
    assert res.returncode == EXIT_INTERRUPTED
    assert res.stdout == "requested True\n"
    assert res.stderr == "error: interrupted twice: aborted without saving\n"


@pytest.mark.parametrize("delay", [0.2, 0.3, 0.4, 0.5, 1.5])  # 0.3-0.45 s: inside the numpy import
def test_ctrl_c_while_starting_is_a_quiet_exit_130(tmp_path, delay):
    """Ctrl-C during the imports, the command's check or the build (before the trainer's handler is up; which
    one a delay hits depends on the machine): one line, exit 130, no KeyboardInterrupt traceback from inside
    an import, nothing written."""
    d = tmp_path / "run"
    proc = subprocess.Popen([PY, str(ROOT / "train.py"), *TINY, f"hydra.run.dir={d}", *SHORT], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, (proc.returncode, err)
    assert err in ("error: interrupted while starting; nothing was written\n",
                   "error: interrupted before training started; nothing was saved\n"), err
    assert not d.exists()


def test_two_ctrl_c_inside_one_long_operation_still_abort():
    """Both presses arrive while the main thread is inside one long operation (a 2000^2 matrix power, the GIL
    released): Python runs the handler once for the two, and the wakeup pipe still counts two."""
    code = ("import os, signal, threading, time, torch\n"
            "from resnext.engine.stop import StopFlag\n"
            "torch.set_num_threads(1)\n"
            "a = torch.randn(2000, 2000)\n"
            "def press():\n"
            "    time.sleep(0.05)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.05)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "with StopFlag() as stop:\n"
            "    threading.Thread(target=press).start()\n"
            "    torch.linalg.matrix_power(a, 40)\n"
            "    time.sleep(2)\n"
            "print('not reached', stop.interrupts, flush=True)\n")
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert res.returncode == EXIT_INTERRUPTED and res.stdout == "", (res.stdout, res.stderr)
    assert res.stderr == "error: interrupted twice: aborted without saving\n"


@pytest.mark.parametrize("overrides, expect", [
    (["data.pad=-3"], "data.pad=-3 must be >= 0"),
    (["data.image_size=0"], "data.image_size=0 must be >= 1"),
    (["data=cifar10", "data.root=/nonexistent", "data.image_size=0"], "data.image_size=0 must be >= 1"),
    (["data.eval_batch_size=-8"], "data.eval_batch_size=-8 must be >= 0"),
    (["data.val_resize=0", "data.val_crop=0"], "data.val_resize=0 must be >= 1"),
    (["trainer.accept_changes=[optim.lrr]"], "trainer.accept_changes names optim.lrr, not keys of the config"),
    (["data=synthetic", "data.batch_size=1000000", "data.synthetic_size=224", "trainer.epochs=2"],
     "batch of 1000000 per process at 224x224 does not fit in cpu memory"),
])
def test_rejected_values_write_nothing(tmp_path, overrides, expect):
    d = tmp_path / "out" / "run"
    res = train(d, *overrides)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and expect in res.stderr, res.stderr
    assert not d.exists()  # no empty run directory left behind


def test_an_image_side_memory_cannot_hold_is_one_line(tmp_path):
    """data.image_size=100000 on a JPEG folder: refused from the model's estimated forward, before a loader
    decodes anything (the kernel killed the process before: exit 137); the run directory is not left behind."""
    from resnext.data.tools import make_fake

    make_fake(tmp_path / "fk", 2, 2, 1, (40, 30))
    d = tmp_path / "run"
    res = train(d, "data=imagenet", f"data.root={tmp_path / 'fk'}", "data.backend=torch", "model.num_classes=0",
                "data.batch_size=4", "data.image_size=100000", "data.val_resize=100000", "data.val_crop=100000")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("error: data.image_size=100000: a forward of 4 image(s) at 100000x100000 needs "
                                 "about"), res.stderr
    assert not d.exists()


def test_unusable_run_directories_are_refused_before_hydra(tmp_path, capsys):
    """train.py's start (compose.single_run, in-process: the check needs no process of its own) refuses a run
    directory it cannot write in one line, exit 2, before anything is written."""
    from resnext.compose import single_run

    def refused(run_dir) -> str:
        with pytest.raises(SystemExit) as e:
            single_run([*TINY, f"hydra.run.dir={run_dir}", *SHORT])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    afile = tmp_path / "file"
    afile.write_text("x")
    for run_dir, expect in (
            (afile, f"{afile} is a file; give a folder (it is created if missing)"),
            (afile / "sub", f"{afile / 'sub'}: {afile} is a file, so the folder cannot be created"),
            # root may write anywhere by its modes, yet /proc and /sys take no new folders (Hydra's traceback)
            (Path("/proc/forbidden"), "/proc/forbidden cannot be created in /proc (No such file or directory); "
                                      "give a folder you can write to"),
            (Path("/sys/kernel/forbidden"), "/sys/kernel/forbidden cannot be created in /sys/kernel")):
        assert refused(run_dir).startswith(f"error: hydra.run.dir={expect}")
    assert afile.read_text() == "x"
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode:
        pytest.skip("a read-only mount needs root")
    try:
        assert "is not writable" in refused(ro)
        assert f"cannot be created ({ro} is not writable)" in refused(ro / "run")
    finally:
        subprocess.run(["umount", str(ro)])
    # a finished run on a read-only mount: "already finished", exit 0; asked for more, one line, exit 2
    done = tmp_path / "done"
    assert train(done, *SHORT).returncode == 0
    assert subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(ro)]).returncode == 0
    try:
        shutil.copytree(done, ro, dirs_exist_ok=True)
        assert subprocess.run(["mount", "-o", "remount,ro", str(ro)]).returncode == 0
        res = train(ro, *SHORT)
        assert res.returncode == 0 and "already finished (1 epochs)" in res.stdout, res.stderr
        res = train(ro, "trainer.epochs=2", "trainer.max_steps_per_epoch=2")
        assert res.returncode == 2 and res.stderr.splitlines() == [
            f"error: {ro}: cannot take the run directory's lock (Read-only file system); give a folder you can "
            "write to"], res.stderr
    finally:
        subprocess.run(["umount", str(ro)])


def test_a_change_that_regroups_the_optimizer_cannot_be_accepted():
    from omegaconf import OmegaConf

    from resnext.engine.rundir import check_resume
    from resnext.errors import ConfigError

    saved = OmegaConf.create({"optim": {"lr": 0.1, "no_decay": "none"}, "trainer": {"epochs": 3}})
    new = OmegaConf.create({"optim": {"lr": 0.2, "no_decay": "bn"}, "trainer": {"epochs": 5}})
    with pytest.raises(ConfigError, match="optim.no_decay cannot change on a resume .'none' -> 'bn'."):
        check_resume(saved, new, ["optim.lr", "optim.no_decay"])
    assert check_resume(saved, OmegaConf.merge(new, {"optim": {"no_decay": "none"}}), ["optim.lr"]) == {
        "optim.lr": (0.1, 0.2), "trainer.epochs": (3, 5)}


@pytest.mark.parametrize("change, worlds, verdict", [
    # batch 32 with model.bn_batch 0: BN over each micro-batch
    (["trainer.accumulate=2"], (1, 1), "images per BN statistic: 32 -> 16"),  # halves every statistic
    (["trainer.accumulate=2"], (2, 1), "kept"),  # 2 x 16 before, 1 x 2 x 16 now
    ([], (2, 1), "images per BN statistic: 16 -> 32"),  # one process now holds both ranks' images
    (["trainer.accumulate=2", "model.bn_batch=32"], (1, 1), "images per BN statistic: 32 -> 16"),
    (["model.bn_batch=32"], (1, 1), "kept"),  # spelled out, the same 32 images
    (["trainer.accumulate=2", "trainer.accept_changes=[trainer.accumulate]"], (1, 1), "accepted"),
])
def test_resume_judges_bn_grouping_by_its_effect(change, worlds, verdict):
    """trainer.accumulate, model.bn_batch and the process count are where/how on a resume when the images per
    BN statistic stay the same, and a change of what is trained (refused unless accepted) when they do not."""
    from resnext.compose import compose_config
    from resnext.engine.rundir import check_resume
    from resnext.errors import ConfigError

    base = ["+recipe=resnext29_demo_digits", "data.batch_size=32", "model.bn_batch=0"]
    saved, new = compose_config(base), compose_config([*base, *change])
    accepted = list(new.trainer.accept_changes)
    if verdict in ("kept", "accepted"):
        diff = check_resume(saved, new, accepted, worlds)
        assert set(diff) <= {"trainer.accumulate", "model.bn_batch", "trainer.accept_changes"}
    else:
        with pytest.raises(ConfigError) as e:
            check_resume(saved, new, accepted, worlds)
        assert verdict in str(e.value) and "trainer.accept_changes=[" in str(e.value)


def test_an_empty_saved_config_is_one_line(tmp_path):
    from resnext.engine.rundir import RunDir
    from resnext.errors import UserError

    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(UserError, match="config.yaml: not a run's config"):
        RunDir(tmp_path).saved_config()


def test_the_run_directory_layout_is_named_in_one_place(tmp_path):
    """RunDir names every file of a run directory, and it is the layout a training writes: config, metrics,
    TensorBoard folder, checkpoints, the held-out list and the prescan record (one real run, digits);
    no other module spells those names (grep over src/)."""
    import re
    from pathlib import Path

    from runs import train

    from resnext.engine.rundir import RunDir

    run = tmp_path / "run"
    assert train(run, "trainer.epochs=1", "trainer.max_steps_per_epoch=2").returncode == 0
    rd = RunDir(run)
    assert rd.is_run() and rd.saved_config().name == "resnext29_demo_digits"
    assert rd.metrics.is_file() and any(rd.tb.iterdir()) and rd.checkpoint("last").is_file()
    assert RunDir.of_weights(rd.checkpoint("last")) == rd and RunDir.of_weights(tmp_path / "x.pt") is None
    assert rd.holdout() is None and rd.known_good() == {}  # digits: no files held out or prescanned
    src = Path(__file__).resolve().parents[1] / "src" / "resnext"
    spelled = [f"{f.relative_to(src)}:{n}" for f in src.rglob("*.py") if f.name != "rundir.py"
               for n, line in enumerate(f.read_text().splitlines(), 1)
               if re.search(r"""["'](config\.yaml|metrics\.jsonl|checkpoints|prescan\.json|val_holdout\.txt|tb)["']""",
                            line) and "torch.hub" not in line]
    assert spelled == []


@pytest.mark.parametrize("planted", [".lock", "metrics.jsonl"])
def test_a_planted_file_link_is_refused_and_its_target_untouched(done, tmp_path, planted):
    """A symbolic link in place of a file the run opens in place (its lock, its metrics) is refused in one
    line before anything is opened through it; the file it points to keeps its bytes."""
    import shutil

    d = tmp_path / "run"
    shutil.copytree(done, d)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    (d / planted).unlink(missing_ok=True)
    (d / planted).symlink_to(outside)
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=2")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: {d / planted}: is a symbolic link; a run directory's own files are "
                                  "never followed out of it (remove the link, or use another run directory)")
    assert outside.read_text() == "precious\n" and (d / planted).is_symlink()


def test_link_safety_holds_when_opened_directly(tmp_path):
    """The opens themselves refuse a link (O_NOFOLLOW), for a link planted after the start's check; a
    planted metrics.jsonl.tmp is never used (the rewrite goes through a uniquely named temporary file)."""
    from resnext.engine.logging import truncate_metrics
    from resnext.engine.rundir import RunLock
    from resnext.errors import UserError

    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(outside)
    with pytest.raises(UserError, match="is a symbolic link"):
        RunLock(run).acquire()
    (run / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\n{"kind": "step", "step": 5}\n')
    (run / "metrics.jsonl.tmp").symlink_to(outside)
    truncate_metrics(run / "metrics.jsonl", 2)
    assert (run / "metrics.jsonl").read_text() == '{"kind": "step", "step": 1}\n'
    assert not (run / "metrics.jsonl").is_symlink() and outside.read_text() == "precious\n"


def test_checkpoint_and_tensorboard_folders_may_be_links(tmp_path):
    """Folders that are links to other storage (a scratch file system) keep working."""
    store = tmp_path / "scratch"
    (store / "ck").mkdir(parents=True)
    (store / "tb").mkdir()
    d = tmp_path / "run"
    d.mkdir()
    (d / "checkpoints").symlink_to(store / "ck")
    (d / "tb").symlink_to(store / "tb")
    res = train(d, *SHORT)
    assert res.returncode == 0, res.stderr
    assert (store / "ck" / "last.pt").is_file() and list((store / "tb").glob("events.*"))


def test_an_accepted_change_of_how_the_network_starts_resumes(done, tmp_path):
    """model.zero_init_last_bn only says how the network starts: a resume accepts the change (the same
    network, so its checkpoint loads), while a change of the network itself cannot be accepted."""
    import shutil

    d = tmp_path / "run"
    shutil.copytree(done, d)
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "model.zero_init_last_bn=false",
                "trainer.accept_changes=[model.zero_init_last_bn]")
    assert res.returncode == 0, res.stderr
    assert "changed since the last start: model.zero_init_last_bn: True -> False" in res.stdout, res.stdout
    refused = train(d, "trainer.epochs=3", "trainer.max_steps_per_epoch=2", "model.cardinality=4",
                    "trainer.accept_changes=[model.cardinality]")
    assert refused.returncode == 2 and "another network, which no resume can accept" in refused.stderr


def test_bn_keys_of_a_saved_config_without_a_plan_are_judged_one_by_one():
    """A saved config whose batch split cannot be planned (its accumulate does not divide the batch) gives no
    BN effect to compare: a change of its BN keys is then refused key by key, not let through."""
    from resnext.compose import compose_config
    from resnext.engine.rundir import check_resume
    from resnext.errors import ConfigError

    base = ["+recipe=resnext29_demo_digits", "data.batch_size=32", "model.bn_batch=0"]
    saved = compose_config([*base, "trainer.accumulate=3"])
    with pytest.raises(ConfigError, match=r"other settings \(model.bn_batch: 0 -> 8\)"):
        check_resume(saved, compose_config([*base, "trainer.accumulate=2", "model.bn_batch=8"]), [], (1, 1))


def test_a_truncated_training_file_is_found_before_the_first_step(tmp_path):
    """data.prescan (on for JPEG folders): a truncated JPEG ends the start in one line, exit 2, with no run
    directory left; once removed, the check's result is kept in the run directory and a resume reads only
    what changed."""
    from resnext.data.tools import make_fake

    make_fake(tmp_path / "fk", 2, 4, 1, (40, 30))
    victim = sorted((tmp_path / "fk" / "train" / "n00000001").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:300])
    d = tmp_path / "run"
    args = ["data=imagenet", f"data.root={tmp_path / 'fk'}", "data.backend=torch", "model.num_classes=0",
            "data.batch_size=4", "data.image_size=32", "trainer.max_steps_per_epoch=1"]
    res = train(d, *args, "trainer.epochs=1")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"error: 1 training file(s) cannot be used: {victim}: truncated")
    assert not d.exists()
    victim.unlink()
    res = train(d, *args, "trainer.epochs=1")
    assert res.returncode == 0 and "checking 7 training file(s) (headers and endings; 0 known good)" in res.stdout
    assert len(json.loads((d / "prescan.json").read_text())) == 7
    res = train(d, *args, "trainer.epochs=2")
    assert res.returncode == 0 and "checking" not in res.stdout, res.stdout


@pytest.mark.slow
def test_the_launcher_ends_as_train_py_ends(tmp_path):
    """python -m resnext.launch (torchrun's own launcher inside): a TERM to the process group saves and the
    launch exits 75 with one line and no traceback (torchrun: 1 and its SignalException traceback); a worker
    killed outright is named in one line, exit 1."""
    def launch(d: Path) -> subprocess.Popen:
        cmd = [PY, "-m", "resnext.launch", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), *TINY,
               f"hydra.run.dir={d}", *LONG]
        return subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    d = tmp_path / "term"
    proc = launch(d)
    wait_for_step(d, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    saved = torch.load(d / "checkpoints" / "last.pt", weights_only=True)["progress"]["global_step"]
    assert proc.returncode == EXIT_REQUEUE and "Traceback" not in err, err
    assert out.splitlines()[-1] == f"{d}: preempted after saving: requeue (the same command resumes) at step {saved}"
    d = tmp_path / "kill"
    proc = launch(d)
    wait_for_step(d, proc)
    workers = subprocess.run(["pgrep", "-f", f"hydra.run.dir={d}"], capture_output=True, text=True).stdout.split()
    os.kill(int(max(workers, key=int)), signal.SIGKILL)  # one trainer, not the launcher
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: process ") and "SIGKILL" in err, err


def test_files_written_by_rename_replace_a_planted_link_and_leave_its_target(tmp_path):
    """config.yaml, the held-out list, the prescan record (write_text_atomic) and checkpoints (atomic_save)
    are written to a new file then renamed over the name: a link planted there is replaced, never written
    through."""
    from resnext.engine.rundir import write_text_atomic

    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    for name in ("config.yaml", "val_holdout.txt", "prescan.json"):
        (tmp_path / name).symlink_to(outside)
        write_text_atomic(tmp_path / name, "new\n")
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).read_text() == "new\n"
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / ckpt.LAST).symlink_to(outside)
    ckpt.atomic_save({"n": torch.tensor(1)}, tmp_path / "ck" / ckpt.LAST, keep_previous=True)
    assert not (tmp_path / "ck" / ckpt.LAST).is_symlink()
    assert int(torch.load(tmp_path / "ck" / ckpt.LAST, weights_only=True)["n"]) == 1
    assert outside.read_text() == "precious\n"
