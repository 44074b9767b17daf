"""DataLoader workers of the torch backend ignore SIGTERM and SIGINT: a signal to the process group is the trainer's."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from imagenet_data_helpers import cfg, ids, index_folder, loaders_for, place
from runs import PY, ROOT, env


def children() -> set[int]:
    """Pids of this process's children (a /proc scan: each /proc/PID/stat names its parent)."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == os.getpid():
                out.add(int(d))
    return out


def ignores(pid: int, sig: int) -> bool:
    """Whether process ``pid`` ignores ``sig`` (the SigIgn mask of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(mask >> (sig - 1) & 1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return index_folder(tmp_path_factory.mktemp("sig"), 24, 4)


def started(root, seed=0):
    """A torch-backend training loader with 2 workers, and its iterator after both workers served a batch."""
    ld = loaders_for(cfg(root, "torch", batch_size=2, workers=2), place(seed=seed)).train
    before = children()
    it = iter(ld)
    first = [ids(next(it)[0]) for _ in range(2)]  # batches go round-robin: one from each worker
    workers = children() - before
    assert len(workers) == 2
    return ld, it, first, workers


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_workers_ignore_stop_signals_and_the_epoch_goes_on(root, sig):
    want = [ids(x) for x, _ in loaders_for(cfg(root, "torch", batch_size=2, workers=0), place(seed=1)).train]
    ld, it, got, workers = started(root, seed=1)
    for pid in workers:
        assert ignores(pid, signal.SIGTERM) and ignores(pid, signal.SIGINT)
        os.kill(pid, sig)
    time.sleep(0.2)  # a worker that did not ignore it would be dead by now
    got += [ids(x) for x, _ in it]
    assert got == want and len(got) == 12
    for pid in workers:  # persistent workers: still alive, and they serve the next epoch too
        os.kill(pid, 0)
    ld.set_epoch(1)
    assert len([x for x, _ in ld]) == 12 and children() >= workers


def test_without_it_a_signalled_worker_breaks_the_epoch(root, monkeypatch):
    """The control: workers that keep the default SIGTERM action die of it and the main process raises."""
    import resnext.data.imagenet_torch as backend

    monkeypatch.setattr(backend, "ignore_stop_signals", lambda worker_id: None)
    ld, it, _, workers = started(root)
    assert not any(ignores(pid, signal.SIGTERM) for pid in workers)
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(RuntimeError, match=r"DataLoader worker .*(killed by signal|exited unexpectedly)"):
        list(it)


# A trainer in miniature: it notes SIGTERM and decides itself (here: finish the epoch), then exits normally
# with its loader (and the loader's persistent workers) still alive, as train.py does.
TRAINER = """
import signal, sys, time
sys.path.insert(0, "tests")
from imagenet_data_helpers import cfg, loaders_for, place
signals = []
signal.signal(signal.SIGTERM, lambda s, f: signals.append(s))
loader = loaders_for(cfg(sys.argv[1], "torch", batch_size=2, workers=2), place()).train
steps = 0
for x, _ in loader:
    steps += 1
    if steps == 2:
        print("ready", flush=True)
        while not signals:
            time.sleep(0.05)
print(steps, signals, flush=True)
"""


def test_a_signal_to_the_process_group_is_the_trainers_and_it_exits_cleanly(root):
    """kill -TERM -- -PGID reaches the trainer and its workers: the epoch goes on, and at its exit the process
    ends its workers itself (multiprocessing would SIGTERM them, which they ignore, and wait forever)."""
    p = subprocess.Popen([PY, "-c", TRAINER, str(root)], cwd=ROOT, env=env(), start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0 and out == f"12 [{int(signal.SIGTERM)}]\n", err[-2000:]
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert leftover == []  # no worker outlived it
