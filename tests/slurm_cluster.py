"""A real Slurm cluster on this host for tests: munged, slurmctld and two slurmd (nodes n1, n2)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")


def missing() -> str | None:
    """Why a Slurm cluster cannot be started here, or None."""
    absent = [d for d in DAEMONS if shutil.which(d) is None]
    if absent:
        return f"Slurm/munge not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    conf: Path
    dir: Path
    env: dict

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", job, check=False).stdout
        for tok in out.split():
            if tok.startswith("JobState="):
                return tok.split("=", 1)[1]
        return "GONE"

    def restarts(self, job: str) -> int:
        out = self.run("scontrol", "show", "job", job, check=False).stdout
        for tok in out.split():
            if tok.startswith("Restarts="):
                return int(tok.split("=", 1)[1])
        return 0

    def wait(self, job: str, states: tuple[str, ...], timeout: float = 600) -> str:
        end = time.time() + timeout
        while time.time() < end:
            s = self.state(job)
            if s in states:
                return s
            time.sleep(0.5)
        raise TimeoutError(f"job {job} still {self.state(job)} after {timeout} s")


def _conf(d: Path, host: str) -> str:
    ports = [free_port() for _ in range(3)]
    nodes = "\n".join(
        f"NodeName=n{i} NodeHostname={host} NodeAddr=127.0.0.1 Port={ports[i]} CPUs=2 RealMemory=2000 State=UNKNOWN"
        for i in (1, 2))
    return f"""ClusterName=resnexttest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
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
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=600
{nodes}
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
"""


def start(d: Path) -> Cluster:
    """Write slurm.conf under ``d`` and start the daemons; stop() ends them."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "slurm.conf"
    conf.write_text(_conf(d, host))
    env = dict(os.environ, SLURM_CONF=str(conf))
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)  # the socket dir (tmpfs: gone after boot)
        subprocess.run(["munged", "--force"], check=True, capture_output=True)
    subprocess.run(["slurmctld", "-f", str(conf)], env=env, check=True, capture_output=True)
    for n in ("n1", "n2"):
        subprocess.run(["slurmd", "-f", str(conf), "-N", n], env=env, check=True, capture_output=True)
    cluster = Cluster(conf, d, env)
    end = time.time() + 60
    while time.time() < end:
        out = cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.split()
        if out and all(s in ("idle", "mixed", "allocated") for s in out):
            return cluster
        time.sleep(0.5)
    stop(cluster)
    raise RuntimeError(f"Slurm nodes never became idle; see {d}/slurmctld.log")


def stop(cluster: Cluster) -> None:
    for pidfile in sorted(cluster.dir.glob("*.pid")):
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        except (ValueError, ProcessLookupError, OSError):
            pass
