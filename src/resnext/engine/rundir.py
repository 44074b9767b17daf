"""A run directory's one owner (an exclusive lock) and one configuration (what a resume may change)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, UserError

LOCK = ".lock"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"  # one JSON record per line (engine.logging writes it)
PRESCAN = "prescan.json"  # data.prescan: the training files found good, {path: [size, mtime_ns]}
HOLDOUT = "val_holdout.txt"  # data.val_fraction: the evaluation files held out of train/, one relative path a line
CHECKPOINTS = "checkpoints"  # last.pt, last.prev.pt, best.pt (engine.checkpoint)
TB = "tb"  # TensorBoard event files
PARTS = (CHECKPOINTS, TB)  # folders inside a run directory, never run directories themselves


@dataclass(frozen=True)
class RunDir:
    """A run directory: the one place its files are named and its records read and written (session,
    Trainer, logging, loading, evaluate, report and status go through it)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tb(self) -> Path:
        return self.path / TB

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    def checkpoint(self, name: str) -> Path:
        """checkpoints/<name>.pt (last, last.prev, best)."""
        return self.checkpoints / f"{name}.pt"

    def config_at_step(self, step: int) -> Path:
        """Where a resume that changed settings keeps the config it replaced."""
        return self.path / f"config.step-{step}.yaml"

    def is_run(self) -> bool:
        """Whether it holds a run's config.yaml (a training wrote it)."""
        return self.config.is_file()

    @classmethod
    def of_weights(cls, weights: Path) -> RunDir | None:
        """The run directory a weights file lies in (RUN/checkpoints/FILE with RUN/config.yaml), else None."""
        run = cls(weights.parent.parent)
        return run if weights.parent.name == CHECKPOINTS and run.is_run() else None

    def saved_config(self) -> DictConfig | None:
        """Its config.yaml (read_config), or None for a new run directory."""
        return read_config(self.config) if self.is_run() else None

    def holdout(self) -> list[str] | None:
        """The evaluation files the run held out of train/ (data.val_fraction), or None where it recorded none."""
        path = self.path / HOLDOUT
        if not path.is_file():
            return None
        return [line for line in path.read_text().splitlines() if line]

    def write_holdout(self, files: list[str]) -> None:
        """Record the held-out files once, so every later start (and evaluate) holds out the same ones."""
        if not (self.path / HOLDOUT).exists():
            write_text_atomic(self.path / HOLDOUT, "".join(f"{f}\n" for f in files))

    def known_good(self) -> dict:
        """The training files an earlier start of the run found good (data.prescan); {} if none or unreadable."""
        try:
            known = json.loads((self.path / PRESCAN).read_text())
        except (OSError, ValueError):
            return {}
        return known if isinstance(known, dict) else {}

    def write_known_good(self, known: dict) -> None:
        write_text_atomic(self.path / PRESCAN, json.dumps(known))


#: Keys that say where and how to run, not what is trained: a resume may change them (they are logged).
WHERE_AND_HOW = (
    "name", "data.root", "data.workers", "data.backend", "data.eval_batch_size", "trainer.device",
    "trainer.progress", "trainer.log_every", "trainer.checkpoint_every_minutes", "trainer.cudnn_benchmark",
    "trainer.compile", "trainer.threads", "trainer.accept_changes", "model.init_from", "trainer.accumulate",
    "trainer.max_micro_batch", "optim.foreach", "optim.fused",
)
GROWS = ("trainer.epochs",)  # may grow on a resume: "extend the run"
#: Keys a resume can never accept: they change the optimizer's parameter groups, which its state must fit.
NEVER = ("optim.no_decay",)


def private_umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The files of a run directory that are opened in place (not replaced by a rename): a symbolic link in
#: their place would send our writes to its target. Folders (checkpoints/, tb/) may be links to other storage.
OPENED_IN_PLACE = (LOCK, METRICS)


def _link_refused(path: Path) -> UserError:
    return UserError(f"{path}: is a symbolic link; a run directory's own files are never followed out of it "
                     "(remove the link, or use another run directory)")


def open_in_run_dir(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open that refuses a symbolic link in the last component (O_NOFOLLOW): UserError in one line."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_refused(path) from None
        raise


def refuse_links(run_dir: Path) -> None:
    """UserError naming the first of the run directory's opened-in-place files that is a symbolic link."""
    for name in OPENED_IN_PLACE:
        if (run_dir / name).is_symlink():
            raise _link_refused(run_dir / name)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a uniquely named temporary file and a rename, mode per umask."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~private_umask())  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``; the kernel releases it when the process dies.

    ``claim`` (once training starts) writes the holder's host and pid into the file, so a second start
    can name it; a start that is rejected before it claims leaves the file as it found it (or absent).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = RunDir(run_dir).lock_file
        self.fd: int | None = None
        self.created = False  # this process created the lock file
        self.claimed = False  # this process wrote its name into it

    def acquire(self) -> None:
        """Take the lock or raise UserError naming the holder."""
        self.created = not os.path.lexists(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_in_run_dir(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~private_umask())
        except UserError:
            raise
        except OSError as e:  # a read-only mount, a folder whose modes changed since the start
            self.created = False
            raise UserError(f"{self.path.parent}: cannot take the run directory's lock ({e.strerror}); "
                            "give a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a start that is still setting up"
            os.close(fd)
            raise UserError(f"{self.path.parent}: another start is training in this run directory ({holder}); "
                            "wait for it or stop it, or use another run directory (name=... or hydra.run.dir=...)"
                            ) from None
        self.fd = fd

    def claim(self) -> None:
        """Write this process's host and pid into the held lock file."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        self.claimed = True

    def release(self) -> None:
        if self.fd is None:
            return
        if self.claimed:
            os.ftruncate(self.fd, 0)
        elif self.created:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None


def flatten(node, prefix: str = "") -> dict:
    """Dotted keys -> leaf values of a nested mapping (lists are leaves)."""
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_config(path: Path) -> DictConfig:
    """The one reader of a run's config.yaml (resume, report, the tools that load a run): ConfigError in one
    line when it cannot be read or is not a run's (an empty file included)."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # YAML or OS error: any way the file cannot be read is bad input
        raise ConfigError(f"{path}: unreadable ({type(e).__name__}); expected the config.yaml a training run "
                          "writes (move it away or use another run directory)") from None
    if not isinstance(cfg, DictConfig) or not all(isinstance(cfg.get(k), DictConfig) for k in ("model", "data")):
        raise ConfigError(f"{path}: not a run's config (expected a mapping with model: and data:, as train.py "
                          "writes it; move it away or use another run directory)")
    return cfg


def changes(saved: DictConfig, new: DictConfig) -> dict[str, tuple]:
    """Every key whose value differs between the saved and the new config: key -> (saved, new).

    Keys only the new config has (the schema grew since the run started) are not counted.
    """
    old = flatten(OmegaConf.to_container(saved, resolve=True))
    cur = flatten(OmegaConf.to_container(new, resolve=True))
    return {k: (old[k], v) for k, v in cur.items() if k in old and old[k] != v}


#: Model keys that only say how a network starts: changing them on a resume changes nothing built (accepted
#: like any other change of what was trained); every other model key makes another network.
INIT_ONLY = ("model.zero_init_last_bn", "model.zero_fc_bias", "model.init_mode",
             "model.drop_path")  # (and how it trains: stochastic depth has no weights of its own)
#: Keys that together with the world size fix how many images each BN statistic covers: a resume judges
#: them by that effect (the same count: where/how; another: a change of what is trained).
BN_GROUPING = ("model.bn_batch", "trainer.accumulate", "trainer.max_micro_batch")


def check_resume(saved: DictConfig, new: DictConfig, accepted: list[str],
                 worlds: tuple[int, int] | None = None) -> dict[str, tuple]:
    """The changes a resume makes; ConfigError if any is neither where/how, a growing epoch count nor accepted.

    ``accepted`` are the keys of ``trainer.accept_changes``: the user's explicit yes to a change in what
    is trained (its effect on the optimizer state is applied by the trainer and recorded). ``worlds``: the
    process counts of the checkpoint's start and of this one; with them, BN_GROUPING keys are judged by the
    images each BN statistic covers (a resume on another process count that keeps them is where/how).
    """
    diff = changes(saved, new)
    refused, architecture = {}, {}
    by_effect = worlds is not None
    if by_effect:
        try:
            from ..plan import RunPlan  # the plan's BN group, of the saved run and of this one

            was_bn, now_bn = RunPlan.of(saved, worlds[0]).bn_images, RunPlan.of(new, worlds[1]).bn_images
        except (UserError, ArithmeticError, AttributeError, KeyError):
            by_effect = False  # a saved config whose plan cannot be made: its BN keys are judged one by one
        if by_effect and was_bn != now_bn and not any(k in accepted for k in BN_GROUPING):
            refused["images per BN statistic"] = (was_bn, now_bn)
    for key, (was, now) in diff.items():
        if key in NEVER and key in accepted:
            raise ConfigError(f"{key} cannot change on a resume ({was!r} -> {now!r}): it regroups the optimizer's "
                              "parameters; start a new run (name=NEW or hydra.run.dir=DIR)")
        if key in BN_GROUPING and by_effect:
            continue  # judged by its effect above
        if key.startswith("model.") and key not in WHERE_AND_HOW + BN_GROUPING + INIT_ONLY:
            architecture[key] = (was, now)
            continue
        if key in WHERE_AND_HOW or key.startswith("paper.") or key in accepted:
            continue
        if key in GROWS and isinstance(was, int) and isinstance(now, int) and now >= was:
            continue
        refused[key] = (was, now)
    if architecture:  # another network: no accepting it, its checkpoint cannot be loaded into it
        was = ", ".join(f"{k}={w!r}" for k, (w, _) in architecture.items())
        now = ", ".join(f"{k}={n!r}" for k, (_, n) in architecture.items())
        raise ConfigError(f"the checkpoint is for model {was}, this run builds {now}: another network, which no "
                          "resume can accept; use another run directory (name=NEW or hydra.run.dir=DIR)")
    if refused:
        listed = ", ".join(f"{k}: {was!r} -> {now!r}" for k, (was, now) in refused.items())
        keys = ",".join(k if k in diff else next((b for b in BN_GROUPING if b in diff), "trainer.accumulate")
                        for k in refused)
        raise ConfigError(f"this run directory was trained with other settings ({listed}); start a new run "
                          f"(name=NEW or hydra.run.dir=DIR), or accept the change from this step on with "
                          f"trainer.accept_changes=[{keys}]")
    return diff
