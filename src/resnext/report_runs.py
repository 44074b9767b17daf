"""Run directories as the report reads them: finding them, their config and metrics, and their labels."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .engine.rundir import PARTS, WHERE_AND_HOW, RunDir
from .errors import UserError

MAX_DEPTH = 3  # how far below a given folder run directories are looked for
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


def find_runs(paths: list[str], warn=None) -> list[Run]:
    """The run directories named, or found below the named folders; UserError on bad input. Unusable
    metrics records are named to ``warn``."""
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
        runs += [load_run(d, warn) for d in found if all(d.resolve() != r.path.resolve() for r in runs)]
    assign_labels(runs)
    return runs


def _walk(d: Path, depth: int) -> list[Path]:
    if RunDir(d).is_run():
        return [d]
    if depth >= MAX_DEPTH:
        return []
    try:
        subdirs = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")
                         and c.name not in PARTS)
    except PermissionError:
        return []
    return [r for c in subdirs for r in _walk(c, depth + 1)]


NUMBER, TEXT, INTEGER = "a number", "a string", "an integer"
#: The metrics fields the report reads, by record kind, with the type each must have (None is allowed:
#: an epoch without evaluation has no val errors). A record that breaks this is skipped and named.
FIELDS = {
    "epoch": {"epoch": INTEGER, "step": INTEGER, "train_loss": NUMBER, "train_top1_err": NUMBER,
              "val_top1_err": NUMBER, "val_top5_err": NUMBER, "images_per_s": NUMBER, "wall_time": NUMBER,
              "time": NUMBER},
    "start": {"world_size": INTEGER, "precision": TEXT, "params": NUMBER, "macs": NUMBER, "time": NUMBER},
    "end": {"status": TEXT, "time": NUMBER},
}


def record_problem(rec) -> str | None:
    """Why a metrics record cannot be used (a field the report reads has the wrong type), or None."""
    if not isinstance(rec, dict):
        return f"a {type(rec).__name__}, not a record"
    if not isinstance(rec.get("kind"), str):
        return f"kind {rec.get('kind')!r} is not a string"
    for key, want in FIELDS.get(rec["kind"], {}).items():
        v = rec.get(key)
        if v is None:
            continue
        ok = (isinstance(v, str) if want == TEXT else
              isinstance(v, int) and not isinstance(v, bool) if want == INTEGER else
              isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok:
            return f"{rec['kind']} field {key!r} is {v!r}, expected {want}"
    return None


def load_run(d: Path, warn=None) -> Run:
    """A run directory's config and metrics records. A line cut by a kill (the last) is skipped quietly; a
    record the report cannot use is skipped and named to ``warn`` ("FILE:LINE: why")."""
    cfg = RunDir(d).saved_config()
    records = []
    metrics = RunDir(d).metrics
    if metrics.is_file():
        lines = metrics.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if number < len(lines) and warn is not None:  # only the last line can be cut by a kill
                    warn(f"{metrics}:{number}: not a JSON record; skipped")
                continue
            why = record_problem(rec)
            if why is None:
                records.append(rec)
            elif warn is not None:
                warn(f"{metrics}:{number}: {why}; skipped")
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
