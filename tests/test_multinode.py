"""Two torchrun launches on one host acting as node 0 and node 1 train like one 2-process launch."""

from __future__ import annotations

import subprocess

import pytest
import torch
from runs import ROOT, TINY, TORCHRUN, env, records, train, weights
from slurm_cluster import free_port


@pytest.mark.slow
def test_two_launch_multinode_equals_single_launch(tmp_path):
    run = ["trainer.epochs=1", "trainer.max_steps_per_epoch=3"]
    ref = tmp_path / "single"
    res = train(ref, *run, nproc=2)
    assert res.returncode == 0, res.stderr
    d = tmp_path / "multi"
    port = free_port()
    procs = [subprocess.Popen(
        [TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
         f"--rdzv-id=multinode-{port}", f"--rdzv-conf=is_host={int(rank == 0)}",  # node 0 hosts the store
         str(ROOT / "train.py"), *TINY, f"hydra.run.dir={d}", *run],
        env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    assert records(d, "start")[0]["world_size"] == 2
    a, b = weights(ref), weights(d)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
