"""`python -m resnext.report RUN_DIR [RUN_DIR ...] [--out DIR]`: our results beside the paper's, and curves.

Each RUN_DIR is a run directory (it holds config.yaml) or a folder of them (a Hydra multirun folder,
for instance). Writes report.md, report.csv, curves.png (top-1 error per epoch, as the paper's Fig. 5)
and, for a CIFAR sweep, fig7.png (test error against parameters, one curve per family, as Fig. 7).
The paper's numbers come from each run's own `paper:` block; a value no run produced is shown as "-".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

COLUMNS = [  # (key, header, format)
    ("run", "run", ""), ("status", "status", ""), ("table", "paper table", ""), ("row", "paper row", ""),
    ("paper_top1", "paper top-1", ".2f"), ("paper_top5", "paper top-5", ".2f"),
    ("best_top1", "best top-1", ".2f"), ("best_top5", "best top-5", ".2f"),
    ("final_top1", "final top-1", ".2f"), ("final_top5", "final top-5", ".2f"),
    ("diff_top1", "best - paper", "+.2f"), ("params_m", "params (M)", ".2f"), ("gflops", "GFLOPs", ".2f"),
    ("epochs", "epochs", ""), ("wall_h", "wall (h)", ".2f"), ("images_per_s", "images/s", ".0f"),
    ("world_size", "world", ""), ("precision", "precision", ""),
]


class ReportError(ValueError):
    """Bad input to the report: one line, exit code 2."""


@dataclass
class Run:
    path: Path  # run directory
    label: str  # how the run is named in tables and legends
    cfg: DictConfig  # its config.yaml
    records: list[dict] = field(default_factory=list)  # its metrics.jsonl

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("kind") == kind]


def find_runs(paths: list[str]) -> list[Run]:
    """Run directories named or found (up to three levels) below the given paths."""
    runs: list[Run] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"{p}: no such file or folder; give run directories or folders holding them")
        if (p / "config.yaml").is_file():
            found = [p]
        else:
            found = sorted({c.parent for depth in ("*", "*/*", "*/*/*") for c in p.glob(f"{depth}/config.yaml")})
            if not found:
                raise ReportError(f"{p}: not a run directory and holds none (no config.yaml found up to 3 levels)")
        for d in found:
            label = d.name if d == p else str(d.relative_to(p.parent))
            runs.append(load_run(d, label))
    return runs


def load_run(d: Path, label: str) -> Run:
    try:
        cfg = OmegaConf.load(d / "config.yaml")
    except Exception as e:
        raise ReportError(f"{d / 'config.yaml'}: unreadable ({type(e).__name__})") from None
    recs = []
    metrics = d / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    return Run(d, label, cfg, recs)


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def complexity(run: Run) -> tuple[float | None, float | None]:
    """(params in M, GFLOPs) from the run's start record, else measured from its model config."""
    start = run.of("start")
    if start and start[-1].get("params"):
        return start[-1]["params"] / 1e6, start[-1]["macs"] / 1e9
    try:
        from .models import build_model
        from .models.complexity import measure

        model = OmegaConf.to_container(run.cfg.model)
        model["num_classes"] = model.get("num_classes") or 1000
        cx = measure(lambda: build_model(model), int(_get(run.cfg, "data.image_size") or 224))
        return cx.params / 1e6, cx.gflops
    except Exception:  # a config this version cannot build: shown as "-"
        return None, None


def summarize(run: Run) -> dict:
    """One table row for a run (None where the run produced nothing)."""
    epochs = run.of("epoch")
    evals = [e for e in epochs if e.get("val_top1_err") is not None]
    best = min(evals, key=lambda e: e["val_top1_err"]) if evals else None
    final = evals[-1] if evals else None
    ends, starts = run.of("end"), run.of("start")
    if not run.records:
        status = "no metrics"
    elif ends and (not starts or ends[-1]["time"] >= starts[-1]["time"]):
        status = ends[-1]["status"]
    else:
        status = "running or stopped"
    paper_top1 = _get(run.cfg, "paper.top1_err")
    params, gflops = complexity(run)
    planned = _get(run.cfg, "trainer.epochs")
    rates = [e["images_per_s"] for e in epochs if e.get("images_per_s")]
    return {
        "run": run.label, "status": status, "name": _get(run.cfg, "name"),
        "table": _get(run.cfg, "paper.table"), "row": _get(run.cfg, "paper.row"),
        "paper_top1": paper_top1, "paper_top5": _get(run.cfg, "paper.top5_err"),
        "best_top1": best and best["val_top1_err"], "best_top5": best and best.get("val_top5_err"),
        "final_top1": final and final["val_top1_err"], "final_top5": final and final.get("val_top5_err"),
        "diff_top1": best["val_top1_err"] - paper_top1 if best and paper_top1 is not None else None,
        "params_m": params, "gflops": gflops,
        "epochs": f"{(epochs[-1]['epoch'] + 1) if epochs else 0}/{planned if planned is not None else '-'}",
        "wall_h": epochs[-1]["wall_time"] / 3600 if epochs and epochs[-1].get("wall_time") is not None else None,
        "images_per_s": statistics.median(rates) if rates else None,
        "world_size": starts[-1]["world_size"] if starts else None,
        "precision": starts[-1]["precision"] if starts else None,
    }


def _cell(v, fmt: str) -> str:
    if v is None:
        return "-"
    return format(v, fmt) if fmt and isinstance(v, int | float) else str(v)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[k], f) for k, _, f in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([k for k, _, _ in COLUMNS])
    for r in rows:
        w.writerow(["" if r[k] is None else r[k] for k, _, _ in COLUMNS])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m resnext.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories or folders of them")
    ap.add_argument("--out", type=Path, default=Path("report"), help="output folder (default ./report)")
    args = ap.parse_args(argv)
    try:
        runs = find_runs(args.runs)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from .report_plots import curves, fig7

    rows = [summarize(r) for r in runs]
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (args.out / "report.md").write_text(table + "\n")
    (args.out / "report.csv").write_text(to_csv(rows))
    written = ["report.md", "report.csv"]
    if curves(runs, args.out / "curves.png"):
        written.append("curves.png")
    if fig7(runs, rows, args.out / "fig7.png"):
        written.append("fig7.png")
    print(table)
    print(f"\nwritten to {args.out}: {', '.join(written)}")


if __name__ == "__main__":
    main()
