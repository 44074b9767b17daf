"""Real Slurm (daemons started here): submit.sh runs a recipe; a USR1 before the time limit requeues the
job, which resumes and ends bit-identical to an uninterrupted run; a 2-node job trains as 2 processes."""

from __future__ import annotations

import subprocess
import time

import pytest
import slurm_cluster
import torch
from runs import ROOT, TINY, env, records, train, weights

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

WHY = slurm_cluster.missing()
# the same tiny run everywhere (TINY minus recipe, which submit.sh takes as its first argument)
OVERRIDES = [o for o in TINY if not o.startswith("+recipe=") and not o.startswith("trainer.device=")] + [
    "trainer.epochs=2", "trainer.max_steps_per_epoch=6"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if WHY:
        pytest.skip(WHY)
    c = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    c.env.update(env())  # one OpenMP thread per process, as in the reference runs
    yield c
    slurm_cluster.stop(c)


def submit(cluster, run_dir, *extra):
    res = subprocess.run([str(ROOT / "slurm" / "submit.sh"), "resnext29_demo_digits", "--gpus-per-node", "0",
                          "--run-dir", str(run_dir), *extra, *OVERRIDES], capture_output=True, text=True,
                         env=cluster.env, timeout=60)
    assert res.returncode == 0, res.stderr
    job = res.stdout.split()[2].rstrip(":")
    assert f"log:     {run_dir}/slurm-{job}.out" in res.stdout
    return job


def log(run_dir, job):
    p = run_dir / f"slurm-{job}.out"
    return p.read_text() if p.exists() else ""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    res = train(d, "trainer.epochs=2", "trainer.max_steps_per_epoch=6")
    assert res.returncode == 0, res.stderr
    return d


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_submit_runs_recipe_to_completion(cluster, reference, tmp_path):
    d = tmp_path / "run"
    job = submit(cluster, d)
    state = cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    assert state == "COMPLETED", log(d, job)
    assert records(d, "end")[-1]["status"] == "finished"
    assert same_weights(reference, d)
    assert "run status: finished" in log(d, job)


def test_usr1_requeues_resumes_and_matches_uninterrupted(cluster, reference, tmp_path):
    d = tmp_path / "run"
    job = submit(cluster, d)
    end = time.time() + 300
    while time.time() < end:  # wait until training is mid-way
        try:
            if any(r["step"] >= 3 for r in records(d, "step")):
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR1", "--batch", job)
    cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=600)
    text = log(d, job)
    assert cluster.state(job) == "COMPLETED", text
    assert "got USR1" in text and "requeueing job" in text, text
    assert cluster.restarts(job) == 1
    statuses = [r["status"] for r in records(d, "end")]
    assert statuses == ["preempted", "finished"], statuses
    steps = [r["step"] for r in records(d, "step")]
    assert steps == list(range(1, 13))  # resumed without duplicated steps
    assert same_weights(reference, d)


def test_two_node_job_trains_like_two_processes(cluster, tmp_path):
    ref = tmp_path / "ref"
    res = train(ref, "trainer.epochs=1", "trainer.max_steps_per_epoch=3", nproc=2)
    assert res.returncode == 0, res.stderr
    d = tmp_path / "run"
    res = subprocess.run([str(ROOT / "slurm" / "submit.sh"), "resnext29_demo_digits", "--gpus-per-node", "0",
                          "--nodes", "2", "--run-dir", str(d), *OVERRIDES[:-2], "trainer.epochs=1",
                          "trainer.max_steps_per_epoch=3"], capture_output=True, text=True, env=cluster.env)
    job = res.stdout.split()[2].rstrip(":")
    assert cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) == "COMPLETED", log(d, job)
    assert records(d, "start")[0]["world_size"] == 2
    assert same_weights(ref, d)


def test_submit_rejects_bad_input(cluster):
    for args, expect in [(["no_such_recipe"], "unknown recipe 'no_such_recipe'"),
                         (["resnext29_demo_digits", "--nodes", "two"], "--nodes must be a whole number"),
                         (["resnext29_demo_digits", "--bogus"], "unknown option '--bogus'")]:
        res = subprocess.run([str(ROOT / "slurm" / "submit.sh"), *args], capture_output=True, text=True,
                             env=cluster.env)
        assert res.returncode == 2 and expect in res.stderr and len(res.stderr.strip().splitlines()) == 1
    helptext = subprocess.run([str(ROOT / "slurm" / "submit.sh"), "--help"], capture_output=True, text=True).stdout
    for opt in ("--nodes", "--gpus-per-node", "--partition", "--time", "--run-dir"):
        assert opt in helptext
