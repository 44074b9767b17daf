"""Run directories as the report reads them: finding them, their config and metrics, and their labels."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .engine.rundir import CONFIG, WHERE_AND_HOW, read_config
from .errors import UserError

MAX_DEPTH = 3  # how far below a given folder run directories are looked for
SKIP_DIRS = {"tb", "checkpoints"}  # parts of a run directory, never run directories themselves
#: Settings that do not change what a run learns (the resume check's list): left out of run labels and of
#: Fig. 7 family keys.
IGNORED_SETTINGS = frozenset(WHERE_AND_HOW)
#: Short names for settings in run labels (the paper's C and d); others go by their last key.
SHORT = {"model.cardinality": "C", "model.width": "d", "data.batch_size": "batch", "trainer.epochs": "epochs"}


@dataclass
class Run:
    path: Path  # the run directory
    cfg: DictConfig  # its config.yaml
    records: list[dict] = field(default_factory=list)  # its metrics.jsonl, in order
    has_metrics: bool = False  # metrics.jsonl exists and holds at least one record
    label: str = ""  # how tables and legends name the run (unique among the runs reported)
    differs: dict[str, str] = field(default_factory=dict)  # the label's settings: key -> value

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("kind") == kind]

    def epochs(self) -> list[dict]:
        """Epoch records by epoch index, the last written winning (a resume may repeat one)."""
        by_index = {r["epoch"]: r for r in self.of("epoch") if isinstance(r.get("epoch"), int)}
        return [by_index[i] for i in sorted(by_index)]

    def get(self, key: str):
        return OmegaConf.select(self.cfg, key, default=None)


def find_runs(paths: list[str]) -> list[Run]:
    """The run directories named, or found below the named folders; UserError on bad input."""
    runs: list[Run] = []
    for arg in paths:
        p = Path(arg)
        if not p.exists():
            raise UserError(f"{p}: no such file or folder; expected a run directory (holding config.yaml) "
                              "or a folder of run directories")
        if not p.is_dir():
            raise UserError(f"{p}: is a file; expected a run directory (holding config.yaml) "
                              "or a folder of run directories")
        found = _walk(p, 0)
        if not found:
            raise UserError(f"{p}: not a run directory and holds none (no config.yaml in it or up to "
                              f"{MAX_DEPTH} levels below); expected a run directory or a folder of them")
        runs += [load_run(d) for d in found if all(d.resolve() != r.path.resolve() for r in runs)]
    assign_labels(runs)
    return runs


def _walk(d: Path, depth: int) -> list[Path]:
    if (d / CONFIG).is_file():
        return [d]
    if depth >= MAX_DEPTH:
        return []
    try:
        subdirs = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")
                         and c.name not in SKIP_DIRS)
    except PermissionError:
        return []
    return [r for c in subdirs for r in _walk(c, depth + 1)]


def load_run(d: Path) -> Run:
    """A run directory's config and metrics records (lines cut by a kill are skipped)."""
    cfg = read_config(d / CONFIG)
    records = []
    metrics = d / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return Run(d, cfg, records, has_metrics=bool(records))


def flat_settings(cfg: DictConfig) -> dict[str, str]:
    """Every leaf setting as 'group.key' -> its value as text, the paper block and IGNORED_SETTINGS left out."""
    out = {}

    def visit(node, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                visit(v, key + ".")
            elif key not in IGNORED_SETTINGS:
                out[key] = json.dumps(v) if isinstance(v, list) else str(v)

    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("paper", None)
    visit(container, "")
    return out


def assign_labels(runs: list[Run]) -> None:
    """Label each run by its recipe name, plus the settings that tell apart runs of the same name."""
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(str(r.get("name")), []).append(r)
    for name, group in by_name.items():
        flats = [flat_settings(r.cfg) for r in group]
        keys = sorted({k for f in flats for k in f if len({g.get(k) for g in flats}) > 1})
        for r, f in zip(group, flats, strict=True):
            r.differs = {k: f.get(k, "-") for k in keys}
            diff = ", ".join(f"{SHORT.get(k, k.split('.')[-1])}={f.get(k, '-')}" for k in keys)
            r.label = f"{name} ({diff})" if diff else name
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:  # the same settings in several folders: the folder tells them apart
            r.label = f"{r.label} [{r.path}]"
