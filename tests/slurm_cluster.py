"""A real Slurm cluster on this host for tests: a private munged, slurmctld and two slurmd (nodes n1, n2).

A test module's ``cluster`` fixture yields from :func:`cluster_or_skip`. It writes slurm.conf for this host into a
fresh directory, starts the daemons on free ports, yields a :class:`Cluster` whose ``env`` points every
client command at that config (``SLURM_CONF``), and at the end cancels what is left and stops the daemons
by the pids in their pid files. Where Slurm or munge is not installed, or we are not root, the tests that
use it are skipped with the reason (``.ci/run`` installs Debian's slurm-wlm and munge when it runs as root).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "squeue", "sinfo")
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE")
# a requeued job may start again only after its old credential expires (Slurm's default: 120 s)
CRED_EXPIRE_S = 10


def missing() -> str | None:
    """Why a Slurm cluster cannot be started here, or None when it can."""
    absent = [d for d in NEEDED if shutil.which(d) is None]
    if absent:
        return (f"Slurm/munge not installed ({', '.join(absent)} not found); as root: "
                "apt-get install -y slurm-wlm munge (.ci/run does this)")
    if os.geteuid() != 0:
        return "a test Slurm cluster runs slurmd as root; not root here"
    return None


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running test cluster: its directory, slurm.conf, node names, and the env for client commands."""

    dir: Path
    conf: Path
    nodes: tuple[str, ...]
    env: dict

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a client command (sbatch, scontrol, ...) against this cluster."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def submit(self, *cmd: str, env: dict | None = None, cwd: Path | None = None) -> tuple[str, str]:
        """Run a submitting command (``sbatch --parsable ...`` or slurm/submit.sh); (job id, its stdout)."""
        res = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                             timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {res.returncode}: {res.stderr.strip()}")
        m = re.search(r"^(\d+)(?:;|$)|\bjob (\d+)", res.stdout, re.M)
        if not m:
            raise RuntimeError(f"no job id in the output of {cmd[0]}: {res.stdout!r}")
        return m.group(1) or m.group(2), res.stdout

    def job(self, job: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, ExitCode, ...); {} once the job is forgotten."""
        out = self.run("scontrol", "-o", "show", "job", job, check=False).stdout
        return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)

    def state(self, job: str) -> str:
        return self.job(job).get("JobState", "GONE")

    def restarts(self, job: str) -> int:
        return int(self.job(job).get("Restarts", 0))

    def wait_until(self, ok: Callable[[], object], what: str, timeout: float = 300) -> object:
        """Poll ``ok()`` until it returns something true; TimeoutError (with the daemon logs) after ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = ok()
            if got:
                return got
            time.sleep(0.3)
        raise TimeoutError(f"{what}: not after {timeout} s\n{self.daemon_logs()}")

    def wait(self, job: str, states: tuple[str, ...] = ENDED, timeout: float = 300) -> str:
        """Wait until ``job`` is in one of ``states`` (default: any end state) and return that state."""
        return self.wait_until(lambda: (s := self.state(job)) in states and s,
                               f"job {job} in {'/'.join(states)} (now {self.state(job)})", timeout)

    def node_addr(self, node: str) -> str:
        out = self.run("scontrol", "show", "node", node).stdout
        return re.search(r"NodeAddr=(\S+)", out).group(1)

    def daemon_logs(self, lines: int = 15) -> str:
        """The last lines of each daemon's log, for failure messages."""
        parts = []
        for log in sorted(self.dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def read_log(path: Path) -> str:
    """A job's output file (``--output``), or "" before Slurm has created it."""
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _slurm_conf(d: Path, host: str, nodes: tuple[str, ...]) -> str:
    ctld_port, *node_ports = (free_port() for _ in range(1 + len(nodes)))
    node_lines = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs=2 RealMemory=2000 State=UNKNOWN"
        for n, p in zip(nodes, node_ports, strict=True))
    # FirstJobId at random: job ids (and the rendezvous ports train.sbatch derives from them) differ
    # between two test clusters that run on this host at the same time
    return f"""# written by tests/slurm_cluster.py: {len(nodes)} node(s) on this one host
ClusterName=resnexttest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock,cred_expire={CRED_EXPIRE_S}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# look at pending jobs every 2 s (default 60): a requeued job starts soon after its credential expires
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
JobRequeue=1
FirstJobId={random.randrange(1000, 900000)}
KillWait=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=600
{node_lines}
PartitionName=debug Nodes={",".join(nodes)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
"""


def _clean_env(conf: Path) -> dict:
    """This process's env minus any outer Slurm job's variables, plus SLURM_CONF for our cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["SLURM_CONF"] = str(conf)
    return env


def start(d: Path, nodes: tuple[str, ...] = ("n1", "n2")) -> Cluster:
    """Write slurm.conf under ``d`` and start munged, slurmctld and one slurmd per node; stop() ends them."""
    host = socket.gethostname().split(".")[0]
    d.chmod(0o755)  # munged wants every directory above its socket searchable by all
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "slurm.conf"
    conf.write_text(_slurm_conf(d, host, nodes))
    cluster = Cluster(d, conf, nodes, _clean_env(conf))
    try:
        # a private munged (own key and socket): nothing shared with other clusters on this host
        subprocess.run(["mungekey", "--create", f"--keyfile={d}/munge.key"], check=True, capture_output=True)
        subprocess.run(["munged", f"--socket={d}/munge.sock", f"--key-file={d}/munge.key",
                        f"--pid-file={d}/munged.pid", f"--seed-file={d}/munged.seed", f"--log-file={d}/munged.log"],
                       check=True, capture_output=True)
        subprocess.run(["slurmctld", "-f", str(conf)], env=cluster.env, check=True, capture_output=True)
        for n in nodes:
            subprocess.run(["slurmd", "-f", str(conf), "-N", n], env=cluster.env, check=True, capture_output=True)

        def idle():
            states = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            return len(states) == len(nodes) and all(s == "idle" for s in states)

        cluster.wait_until(idle, f"nodes {','.join(nodes)} idle", timeout=90)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` is still a running (not zombie) process called ``name``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
    return comm == name and state != "Z"


def stop(cluster: Cluster) -> None:
    """Cancel every job left, then stop the daemons by the pids in their pid files (KILL after 30 s)."""
    if (cluster.dir / "slurmctld.pid").exists():
        jobs = cluster.run("squeue", "-h", "-o", "%i", check=False, timeout=30).stdout.split()
        if jobs:
            cluster.run("scancel", *jobs, check=False, timeout=30)
            end = time.monotonic() + 60
            while time.monotonic() < end and cluster.run("squeue", "-h", check=False, timeout=30).stdout.strip():
                time.sleep(0.5)
    daemons = [(p, "slurmd") for p in sorted(cluster.dir.glob("slurmd-*.pid"))]
    daemons += [(cluster.dir / "slurmctld.pid", "slurmctld"), (cluster.dir / "munged.pid", "munged")]
    for pidfile, name in daemons:
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if not _alive(pid, name):
            continue
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 30
        while _alive(pid, name) and time.monotonic() < end:
            time.sleep(0.1)
        if _alive(pid, name):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def running(nodes: tuple[str, ...] = ("n1", "n2")) -> Iterator[Cluster]:
    """A cluster for the duration of a ``with`` block, in a fresh directory removed afterwards."""
    # not under pytest's tmp dir: that one is mode 0700, and munged refuses a socket others cannot reach
    d = Path(tempfile.mkdtemp(prefix="resnext-slurm-"))
    try:
        c = start(d, nodes)
        try:
            yield c
        finally:
            stop(c)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cluster_or_skip() -> Iterator[Cluster]:
    """Body of a ``cluster`` fixture: a two-node cluster (n1, n2, 2 CPUs each), or a skip with the reason.

        @pytest.fixture(scope="module")
        def cluster():
            yield from slurm_cluster.cluster_or_skip()
    """
    why = missing()
    if why:
        pytest.skip(why)
    with running() as c:
        yield c
