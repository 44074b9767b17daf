"""`python -m resnext.report RUN_DIR [RUN_DIR ...] [--out DIR]`: our results beside the paper's, and curves.

Each RUN_DIR is a run directory (it holds config.yaml) or a folder of them (a Hydra multirun folder, for
instance; run directories are looked for up to three levels below it). Writes to --out (default ./report):
report.md and report.csv (one row per run, unfinished runs included), curves.png (train and val top-1 error
per epoch, as the paper's Fig. 5) and, for a CIFAR sweep, fig7.png (test error against parameters, one curve
per family, as Fig. 7, with standard-error bars where seeds repeat a model). The paper's numbers come from each run's own `paper:` block; params and GFLOPs are
measured from the run's model config at its data.image_size. A value no run produced is "-" in report.md
and an empty cell in report.csv, never a guess.

The headline is the final model: "final" is a run's last evaluation, and "final - paper" is given for
finished runs only. "best epoch" (the epoch with the lowest val top-1 error) is shown beside it, labelled
as what it is: chosen on the evaluation set itself, so an optimistic number, not a test result.

Runs that differ only by trainer.seed (a sweep such as `trainer.seed=1,2,3`) also get one row together,
after their own: the mean final error, its standard error (sample std / sqrt(n)) and n.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .engine.rundir import write_text_atomic
from .errors import EXIT_USER_ERROR, UserError, printable, reports_user_errors
from .outputs import check_folder
from .report_runs import Run, find_runs, flat_settings  # noqa: F401  (re-exported: the report's public names)

#: report.csv's columns (report.md shows them too, epochs as done/planned and without the path).
#: final_*: the run's last evaluation; diff_* = final - paper (finished runs only); best_epoch_*: the epoch
#: with the lowest val top-1 error and its errors, chosen on the evaluation set.
#: n: runs whose final errors the row holds (a seed group's mean); *_se: standard error of that mean.
CSV_FIELDS = ["run", "path", "recipe", "model", "status", "paper_table", "paper_row", "paper_top1", "paper_top5",
              "final_top1", "final_top5", "final_top1_se", "final_top5_se", "n", "seeds", "diff_top1",
              "diff_top5", "best_epoch", "best_epoch_top1",
              "best_epoch_top5", "params_m", "gflops", "epochs_done", "epochs_planned", "wall_s", "images_per_s",
              "world_size", "precision"]



def model_name(m: DictConfig) -> str:
    """The paper's way to name the network, as its family says: ResNeXt-50 (32x4d), ResNet-50 (1x64d), WRN-28-10."""
    from .models import describe

    try:
        return describe(OmegaConf.to_container(m, resolve=True))
    except (ValueError, TypeError):  # a family or key this version does not know
        return str(m.get("arch"))


@cache
def _measure(model_json: str, image_size: int) -> tuple[float, float]:
    from .models import build_model
    from .models.complexity import measure

    model = json.loads(model_json)
    cx = measure(lambda: build_model(model), image_size)
    return cx.params / 1e6, cx.gflops


def complexity(run: Run) -> tuple[float | None, float | None]:
    """(params in M, GFLOPs) of the run's model config at its data.image_size; (None, None) if unbuildable."""
    from .config import classes_before_data

    model = OmegaConf.to_container(run.cfg.model, resolve=True)
    model.pop("init_from", None)
    if not model.get("num_classes"):  # 0 = taken from the data set
        measured = [r for r in run.of("start") if r.get("params") and r.get("macs")]
        if measured:  # the trainer measured the model it built, at the data's real class count
            return measured[-1]["params"] / 1e6, measured[-1]["macs"] / 1e9
        model["num_classes"] = classes_before_data(0, run.get("data.dataset"))
    try:
        return _measure(json.dumps(model, sort_keys=True), int(run.get("data.image_size") or 224))
    except (ValueError, TypeError, KeyError, RuntimeError) as e:  # a config this version cannot build
        print(f"warning: {run.path}: params/GFLOPs not measured ({type(e).__name__}: {e})".splitlines()[0],
              file=sys.stderr)
        return None, None


MAX_WARNINGS = 10  # unusable metrics records named one by one; the rest counted


def status(run: Run) -> str:
    """finished / preempted / failed (an end record after the last start), running-or-stopped, no metrics."""
    if not run.has_metrics:
        return "no metrics"
    starts, ends = run.of("start"), run.of("end")
    if ends and (not starts or (ends[-1].get("time") or 0) >= (starts[-1].get("time") or 0)):
        return str(ends[-1].get("status") or "running-or-stopped")
    return "running-or-stopped"


def _joined(values: list) -> str | None:
    """Distinct values in order of first appearance, '/'-joined (a resume may change them); None if none."""
    seen = list(dict.fromkeys(str(v) for v in values if v is not None))
    return "/".join(seen) if seen else None


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def summarize(run: Run) -> dict:
    """One table row for a run (None where the run produced nothing)."""
    epochs = run.epochs()
    evals = [e for e in epochs if e.get("val_top1_err") is not None]
    best = min(evals, key=lambda e: e["val_top1_err"]) if evals else {}
    final = evals[-1] if evals else {}
    starts = run.of("start")
    params, gflops = complexity(run)
    rates = [e["images_per_s"] for e in epochs if e.get("images_per_s")]
    paper_top1, paper_top5 = run.get("paper.top1_err"), run.get("paper.top5_err")
    state = status(run)
    done = final if state == "finished" else {}  # the paper is compared with a finished run's final model
    return {
        "run": run.label, "path": str(run.path), "recipe": run.get("name"), "model": model_name(run.cfg.model),
        "status": state, "paper_table": run.get("paper.table"), "paper_row": run.get("paper.row"),
        "paper_top1": paper_top1, "paper_top5": paper_top5,
        "final_top1": final.get("val_top1_err"), "final_top5": final.get("val_top5_err"),
        "final_top1_se": None, "final_top5_se": None, "n": 1 if final else None,
        "seeds": None if run.get("trainer.seed") is None else str(run.get("trainer.seed")),
        "diff_top1": _minus(done.get("val_top1_err"), paper_top1),
        "diff_top5": _minus(done.get("val_top5_err"), paper_top5),
        "best_epoch": best["epoch"] + 1 if best else None,
        "best_epoch_top1": best.get("val_top1_err"), "best_epoch_top5": best.get("val_top5_err"),
        "params_m": params, "gflops": gflops,
        "epochs_done": epochs[-1]["epoch"] + 1 if epochs else (0 if starts else None),
        "epochs_planned": run.get("trainer.epochs"),
        "wall_s": epochs[-1].get("wall_time") if epochs else None,
        "images_per_s": statistics.median(rates) if rates else None,
        "world_size": _joined([s.get("world_size") for s in starts]),
        "precision": _joined([s.get("precision") for s in starts]),
    }


def _col(key: str, fmt: str = "") -> Callable[[dict], str]:
    """A row's value as text: '-' if None, else formatted with ``fmt`` (numbers only)."""
    def text(row: dict) -> str:
        v = row[key]
        if v is None:
            return "-"
        return format(v, fmt) if fmt and isinstance(v, int | float) else str(v)
    return text


def _with_se(key: str) -> Callable[[dict], str]:
    """A final error as text, with '± standard error' where the row is a seed group's mean."""
    def text(row: dict) -> str:
        se = row[f"{key}_se"]
        return _col(key, ".2f")(row) + ("" if se is None else f" ± {se:.2f}")
    return text


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


#: report.md's columns: header and how a row becomes the cell's text ('-' wherever there is no value).
MD_COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("run", _col("run")), ("recipe", _col("recipe")), ("model", _col("model")), ("status", _col("status")),
    ("paper table", _col("paper_table")), ("paper row", _col("paper_row")),
    ("paper top-1", _col("paper_top1", ".2f")), ("paper top-5", _col("paper_top5", ".2f")),
    ("final top-1", _with_se("final_top1")), ("final top-5", _with_se("final_top5")), ("n", _col("n")),
    ("final - paper top-1", _col("diff_top1", "+.2f")), ("final - paper top-5", _col("diff_top5", "+.2f")),
    ("best epoch (chosen on val)", _col("best_epoch")), ("best-epoch top-1", _col("best_epoch_top1", ".2f")),
    ("best-epoch top-5", _col("best_epoch_top5", ".2f")),
    ("params (M)", _col("params_m", ".2f")), ("GFLOPs", _col("gflops", ".2f")),
    ("epochs", lambda r: f"{_col('epochs_done')(r)}/{_col('epochs_planned')(r)}"),
    ("wall time", lambda r: "-" if r["wall_s"] is None else _duration(r["wall_s"])),
    ("images/s", _col("images_per_s", ".0f")), ("world", _col("world_size")), ("precision", _col("precision")),
]


def markdown(rows: list[dict]) -> str:
    """The table as Markdown (cells escaped; '-' where there is no value)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(h for h, _ in MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    lines += ["| " + " | ".join(cell(f(r)) for _, f in MD_COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    """The table as CSV: numbers unrounded, an empty cell where there is no value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in rows:
        w.writerow(["" if r[k] is None else r[k] for k in CSV_FIELDS])
    return buf.getvalue()


def write_report(runs: list[Run], out: Path) -> tuple[str, list[str]]:
    """Write the table and figures under ``out``; returns the Markdown table and the files written."""
    from .report_groups import with_seed_groups
    from .report_plots import FIGURES

    links = [name for name in ("report.md", "report.csv", *FIGURES) if (out / name).is_symlink()]
    if links:  # on a shared disk a planted link would send the report over another file
        raise UserError(f"--out {out}: {links[0]} is a symbolic link; links are not followed (remove it, or "
                        "give another --out)")
    rows = [summarize(r) for r in runs]
    table_rows = with_seed_groups(runs, rows)
    table = markdown(table_rows)
    write_text_atomic(out / "report.md", table + "\n")  # a rename: replaces what is there, follows nothing
    write_text_atomic(out / "report.csv", to_csv(table_rows))
    written = ["report.md", "report.csv"]
    for filename, draw in FIGURES.items():
        target = out / filename
        if draw(runs, rows, target):
            written.append(filename)
        elif target.is_file():
            target.unlink()  # a figure left by an earlier report would not match this table
    return table, written


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnext.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories or folders of them")
    ap.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: ./report)")
    args = ap.parse_args(argv)
    try:
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {args.out}: is a file; expected a folder to write the report in")
        check_folder(args.out, f"--out {args.out}")  # before any run is read: /proc, a read-only mount
        skipped: list[str] = []
        runs = find_runs(args.runs, skipped.append)
        for line in skipped[:MAX_WARNINGS]:
            print(f"warning: {line}", file=sys.stderr)
        if len(skipped) > MAX_WARNINGS:
            print(f"warning: {len(skipped) - MAX_WARNINGS} more unusable metrics record(s) skipped", file=sys.stderr)
        if skipped and not any(r.has_metrics for r in runs):
            raise UserError(f"nothing to report: every metrics record is unusable (first: {skipped[0]})")
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            table, written = write_report(runs, args.out)
        except OSError as e:
            raise UserError(f"--out {args.out}: cannot write there ({e.strerror}); "
                              "expected a writable folder") from None
    except UserError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(table)
    print(f"\n{len(runs)} run(s); written to {args.out}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
