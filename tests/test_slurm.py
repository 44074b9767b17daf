"""slurm/submit.sh and slurm/train.sbatch on a real Slurm (daemons started by tests/slurm_cluster.py).

A submitted recipe trains to the end; USR1 (Slurm's time-limit warning) makes the job save, requeue itself
and resume to the same weights as an uninterrupted run, on one node and on two; a cancel saves and is not
requeued, a failing start is not requeued, and the same command then resumes; bad input is refused, the
command's config with train.py's own check before anything is queued; the run directory is a local run's.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch
from runs import PY, ROOT, TINY, records, train, weights
from slurm_cluster import Cluster, cluster_or_skip, read_log

SUBMIT = ROOT / "slurm" / "submit.sh"
SBATCH = ROOT / "slurm" / "train.sbatch"
RECIPE = "resnext29_demo_digits"
# TINY without the recipe (submit.sh's first argument) and the device (train.sbatch sets cpu on CPU nodes)
BASE = [o for o in TINY if not o.startswith(("+recipe=", "trainer.device="))]
RUN = [*BASE, "trainer.epochs=2", "trainer.max_steps_per_epoch=8", "trainer.progress=true"]  # 16 steps
STEPS = 16
JOB_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread per trainer on the 2 shared cores


def submit(c: Cluster, run_dir, *args: str, overrides=RUN) -> str:
    """slurm/submit.sh on CPU nodes; returns the job id after checking what it printed."""
    job, out = c.submit(str(SUBMIT), RECIPE, "--gpus-per-node", "0", "--run-dir", str(run_dir), *args, *overrides,
                        env=JOB_ENV)
    assert f"run dir: {run_dir}\n" in out and f"log:     {run_dir}/slurm-{job}.out\n" in out, out
    return job


def log(run_dir, job) -> str:
    return read_log(run_dir / f"slurm-{job}.out")


def ends(run_dir) -> list[tuple[str, int]]:
    return [(r["status"], r["step"]) for r in records(run_dir, "end")]


def signal_mid_run(c: Cluster, run_dir, job, *scancel_args: str, after_step: int = 3) -> None:
    """Once the job has logged step ``after_step``, send it ``scancel *scancel_args JOB``."""
    def mid_run():
        try:
            return any(r["step"] >= after_step for r in records(run_dir, "step"))
        except (FileNotFoundError, ValueError):
            return False

    c.wait_until(mid_run, f"job {job} at step {after_step}\n{log(run_dir, job)}", timeout=300)
    assert c.state(job) == "RUNNING"
    c.run("scancel", *scancel_args, job)


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def assert_steps_once(run_dir, n: int = STEPS) -> None:
    steps = [r["step"] for r in records(run_dir, "step")]
    assert steps == list(range(1, n + 1)), steps  # a resume neither repeats nor skips a step


@pytest.fixture(scope="module")
def cluster():
    """Two Slurm nodes on this host for this module (or a skip saying why not)."""
    yield from cluster_or_skip()


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The tiny recipe submitted once and left alone: (run dir, job id)."""
    d = tmp_path_factory.mktemp("uninterrupted") / "run"
    job = submit(cluster, d)
    assert cluster.wait(job) == "COMPLETED", log(d, job)
    return d, job


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_trains_the_recipe_to_completion(cluster, uninterrupted, tmp_path):
    d, job = uninterrupted
    assert ends(d) == [("finished", STEPS)]
    assert_steps_once(d)
    text = log(d, job)
    assert "run status: finished" in text and "requeueing" not in text, text
    # a batch job's log is a file: plain progress lines, no progress bar
    assert "\r" not in (d / f"slurm-{job}.out").read_text() and "epoch 1/2 step 1/8: loss " in text, text
    assert cluster.restarts(job) == 0
    assert cluster.job(job)["JobName"] == f"resnext-{RECIPE}"
    start = records(d, "start")[0]
    assert start["world_size"] == 1 and start["device"] == "cpu"
    # the Slurm job trains exactly what the same command trains without Slurm
    local = tmp_path / "local"
    res = train(local, *RUN)
    assert res.returncode == 0, res.stderr
    assert_same_weights(local, d)


@pytest.mark.slurm
@pytest.mark.slow
def test_usr1_saves_requeues_and_resumes_to_the_uninterrupted_weights(cluster, uninterrupted, tmp_path):
    d = tmp_path / "run"
    job = submit(cluster, d)
    signal_mid_run(cluster, d, job, "--signal=USR1", "--batch")  # what --signal=B:USR1@120 sends
    assert cluster.wait(job) == "COMPLETED", log(d, job)
    text = log(d, job)
    assert "got USR1" in text and f"requeueing job {job}" in text, text
    assert cluster.restarts(job) == 1
    (first, stopped_at), second = ends(d)
    assert first == "preempted" and 3 <= stopped_at < STEPS and second == ("finished", STEPS)
    assert [r["start_step"] for r in records(d, "start")] == [0, stopped_at]
    assert_steps_once(d)
    assert_same_weights(uninterrupted[0], d)


@pytest.mark.slurm
@pytest.mark.slow
def test_two_node_job_preempted_and_resumed_trains_like_two_processes(cluster, tmp_path):
    ref = tmp_path / "ref"
    res = train(ref, *RUN, nproc=2)  # torchrun --standalone --nproc_per_node=2, uninterrupted
    assert res.returncode == 0, res.stderr
    d = tmp_path / "run"
    job = submit(cluster, d, "--nodes", "2")
    signal_mid_run(cluster, d, job, "--signal=USR1", "--batch")
    assert cluster.wait(job) == "COMPLETED", log(d, job)
    text = log(d, job)
    # one torchrun on each node, the rendezvous at the first node's NodeAddr
    assert re.search(rf"on n\[1-2\]: 2 node\(s\) x 1 process\(es\), rendezvous {cluster.node_addr('n1')}:\d+", text), text
    assert cluster.restarts(job) == 1
    assert [s for s, _ in ends(d)] == ["preempted", "finished"]
    assert [r["world_size"] for r in records(d, "start")] == [2, 2]
    assert_steps_once(d)
    assert_same_weights(ref, d)


@pytest.mark.slurm
@pytest.mark.slow
def test_cancel_saves_without_requeue_and_the_same_command_resumes(cluster, uninterrupted, tmp_path):
    d = tmp_path / "run"
    job = submit(cluster, d)
    signal_mid_run(cluster, d, job)  # plain scancel: TERM to every process of the job
    cluster.wait_until(lambda: "not requeueing" in log(d, job), f"job {job}'s script to end\n{log(d, job)}", 120)
    assert cluster.wait(job) == "CANCELLED" and cluster.restarts(job) == 0, log(d, job)
    [(status, stopped_at)] = ends(d)
    assert status == "preempted" and stopped_at < STEPS
    saved = torch.load(d / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["progress"]["global_step"] == stopped_at

    # a start that fails (here: a bad override, exit 2) after a preempted one is not requeued (submitted
    # with sbatch itself: submit.sh would refuse it before queueing)
    bad, _ = cluster.submit("sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", f"--output={d}/slurm-%j.out",
                            f"--export=ALL,RESNEXT_ROOT={ROOT},RUN_DIR={d},GPUS_PER_NODE=0,NPROC_PER_NODE=1",
                            str(SBATCH), RECIPE, *RUN, "model.cardinality=0", env=JOB_ENV)
    assert cluster.wait(bad) == "FAILED", log(d, bad)
    assert cluster.restarts(bad) == 0
    assert "model.cardinality" in log(d, bad) and "ended without finishing" in log(d, bad)

    # the original command again: resumes where the cancel saved and ends like the uninterrupted run
    again = submit(cluster, d)
    assert cluster.wait(again) == "COMPLETED", log(d, again)
    assert ends(d) == [("preempted", stopped_at), ("finished", STEPS)]
    assert_steps_once(d)
    assert_same_weights(uninterrupted[0], d)


@pytest.mark.slurm
@pytest.mark.slow
def test_any_train_py_command_is_submitted_without_a_recipe_name(cluster, tmp_path):
    """submit.sh OVERRIDES (no recipe first: the README's own-folder form) checks, submits and trains them;
    the job is named after name=."""
    d = tmp_path / "own"
    job, out = cluster.submit(str(SUBMIT), f"+recipe={RECIPE}", "name=own_images", "--gpus-per-node", "0",
                              "--run-dir", str(d), *BASE, "trainer.epochs=1", "trainer.max_steps_per_epoch=2",
                              env=JOB_ENV)
    assert f"submitted job {job}: +recipe={RECIPE} name=own_images" in out, out
    assert cluster.job(job)["JobName"] == "resnext-own_images"
    assert cluster.wait(job) == "COMPLETED", log(d, job)
    assert ends(d) == [("finished", 2)]


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_checks_the_command_as_train_py_does_and_queues_nothing_on_a_mistake(cluster, uninterrupted):
    d, _ = uninterrupted
    for overrides, expect in [
        ([*RUN, "model.cardnality=4"], "unknown key model.cardnality; valid keys of model (cifar_resnext)"),
        ([*RUN, "data.batch_size=30"], "data.batch_size=30 is the global batch and must be divisible by the world size 4"),
        # the run directory was trained with lr 0.2: another lr is a new run (name=...), refused before queueing
        ([*RUN, "optim.lr=0.5"], "this run directory was trained with other settings (optim.lr: 0.2 -> 0.5)"),
    ]:
        nodes = ["--nodes", "2", "--nproc", "2"] if "data.batch_size=30" in overrides else []
        res = subprocess.run([str(SUBMIT), RECIPE, "--gpus-per-node", "0", *nodes, "--run-dir", str(d), *overrides],
                             capture_output=True, text=True, env={**cluster.env, **JOB_ENV}, timeout=300)
        assert res.returncode == 2 and res.stdout == "", (overrides, res.stdout, res.stderr)
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and expect in res.stderr, res.stderr
        assert cluster.run("squeue", "-h", "-o", "%i").stdout.strip() == ""  # nothing queued


@pytest.mark.slurm
@pytest.mark.slow
def test_hydra_submitit_launcher_runs_one_job_per_point_and_a_timed_out_point_resumes(cluster, uninterrupted,
                                                                                        tmp_path):
    """`python train.py -m hydra/launcher=submitit_slurm ...`: each point is a Slurm job; submitit's time-limit
    signal (USR2) makes the point save, submitit requeues it, and it ends with the uninterrupted weights; a
    point requeued by Slurm (preemption) saves on TERM and resumes."""
    point = [o for o in RUN if not o.startswith("model.cardinality=")]
    launcher = ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.max_num_timeout=3"]
    sweep = subprocess.Popen([PY, str(ROOT / "train.py"), "-m", *launcher, f"+recipe={RECIPE}", *point,
                              "trainer.device=cpu", "model.cardinality=1,2"], cwd=tmp_path, text=True,
                             env={**cluster.env, **JOB_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        d = tmp_path / "multirun" / RECIPE / "model.cardinality=2"  # the uninterrupted run's settings
        job = cluster.wait_until(lambda: next((j for j in cluster.run("squeue", "-h", "-o", "%i").stdout.split()
                                               if j.endswith("_1")), None), "the sweep's second job", timeout=300)
        signal_mid_run(cluster, d, job, "--signal=USR2")  # what submitit asks Slurm to send before the limit
        # the other point is preempted as PreemptMode=REQUEUE does it: TERM, the trainer saves, Slurm requeues
        other = d.parent / "model.cardinality=1"
        requeued = not any(r["kind"] == "end" for r in records(other))  # (it did not finish already)
        if requeued:
            cluster.wait_until(lambda: any(r["step"] >= 3 for r in records(other, "step")), "the other point", 300)
            cluster.run("scontrol", "requeue", job[:-1] + "0")
        out, _ = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    assert sorted(p.name for p in (d.parent / ".submitit").iterdir() if p.is_dir()) == sorted(
        [job.split("_")[0], f"{job.split('_')[0]}_0", job])  # an array job: one task per point
    (first, stopped_at), second = ends(d)
    assert first == "preempted" and 3 <= stopped_at < STEPS and second == ("finished", STEPS)
    assert [r["start_step"] for r in records(d, "start")] == [0, stopped_at]
    assert_steps_once(d)
    assert_same_weights(uninterrupted[0], d)
    assert [s for s, _ in ends(other)] == (["preempted", "finished"] if requeued else ["finished"])
    assert_steps_once(other)


def run_submit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SUBMIT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("args, expect", [
    ([], "nothing to train: slurm/submit.sh [RECIPE]"),
    (["no_such_recipe"], "unknown recipe 'no_such_recipe' (no recipes/no_such_recipe.yaml)"),
    (["--nodes", "2", "--dry-run", "model.cardnality=4"], "unknown key model.cardnality"),  # no recipe: checked too
    ([RECIPE, "--nodes", "two"], "--nodes must be a whole number, got 'two'"),
    ([RECIPE, "--nodes", "0"], "--nodes must be at least 1"),
    ([RECIPE, "--time"], "--time needs a value"),
    ([RECIPE, "--bogus"], "unknown option '--bogus'"),
    ([RECIPE, "optim.lr"], "'optim.lr' is neither an option nor a key=value override"),
    ([RECIPE, "--nproc", "2"], "--nproc is for CPU nodes"),
    ([RECIPE, "--warn", "10"], "--warn must be at least 30"),
    ([RECIPE, "hydra.run.dir=/x"], "use --run-dir DIR"),
    # train.py's own check (python -m resnext.compose), also for --dry-run
    ([RECIPE, "--dry-run", "model.cardnality=4"], "unknown key model.cardnality"),
    ([RECIPE, "--dry-run", "--gpus-per-node", "0", "--nproc", "3"], "divisible by the world size 3"),
])
def test_submit_refuses_bad_input_in_one_line(args, expect):
    res = run_submit(*args)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error: ") and expect in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_submit_help_and_the_sbatch_command_it_builds():
    helptext = run_submit("--help").stdout
    for opt in ("--nodes", "--gpus-per-node", "--nproc", "--cpus-per-node", "--partition", "--time", "--warn",
                "--run-dir", "--dry-run"):
        assert f"\n  {opt}" in helptext
    sbatch_help = subprocess.run(["bash", str(SBATCH), "--help"], capture_output=True, text=True).stdout
    for name in ("sbatch slurm/train.sbatch RECIPE", "USR1", "TERM", "RUN_DIR", "GPUS_PER_NODE", "NPROC_PER_NODE",
                 "STOP_GRACE"):
        assert name in sbatch_help

    def dry(*args):
        res = run_submit(RECIPE, "--dry-run", *args)
        assert res.returncode == 0, res.stderr
        return res.stdout

    own = run_submit("--dry-run", "model=resnet", "model.depth=18", "data.root=/my/folder", "name=mine")
    assert own.returncode == 0, own.stderr
    assert "--job-name=resnext-mine" in own.stdout and f"{SBATCH} model=resnet model.depth=18" in own.stdout
    gpu = dry("--nodes", "4", "--partition", "gpu", "--time", "3-00:00:00", "data.root=/data")
    for part in ("--nodes=4", "--gres=gpu:8", "--cpus-per-task=64", "--partition=gpu", "--time=3-00:00:00",
                 "GPUS_PER_NODE=8", "NPROC_PER_NODE=8", f"{SBATCH} {RECIPE} data.root=/data"):
        assert part in gpu, gpu
    assert "--signal" not in gpu and "STOP_GRACE" not in gpu  # train.sbatch's defaults: USR1@120, 100 s
    cpu = dry("--gpus-per-node", "0", "--nproc", "2", "--warn", "300")
    for part in ("--gres=none", "--cpus-per-task=2", "NPROC_PER_NODE=2", "--signal=B:USR1@300", "STOP_GRACE=280"):
        assert part in cpu, cpu
    # the run directory is the one a local run of the same command uses (a resubmission resumes it)
    from resnext.compose import run_dir_of

    run_dir = re.compile(r"--output=(\S+)/slurm-%j\.out")
    for overrides in ([], ["optim.lr=0.3"], ["name=other", "trainer.epochs=3"]):
        local = run_dir_of([f"+recipe={RECIPE}", *overrides])
        assert run_dir.search(dry(*overrides))[1] == str(ROOT / local), overrides
    assert run_dir.search(dry("optim.lr=0.3"))[1] == str(ROOT / "outputs" / RECIPE)
    assert run_dir.search(dry("name=other"))[1] == str(ROOT / "outputs" / "other")
