"""`python -m resnext.status RUN_DIR`: how the run's last start ended, as a line and as train.py's exit code.

Under torchrun the launcher's own status is 1 whenever it was signalled or a worker exited non-zero, so a
saved preemption (the trainers' exit 75) and a crash look alike from outside. The run directory knows: each
start appends a "start" record to metrics.jsonl and, when it ends on its own terms, an "end" record. This
prints the last start's ending and exits with the code train.py itself gave:

    torchrun --nproc_per_node=8 train.py +recipe=... ; python -m resnext.status outputs/NAME; echo $?
    0 finished | 75 preempted, saved: requeue (the same command resumes) | 3 non-finite loss |
    4 a save failed | 1 no end record after the last start (killed, crashed, or still running)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .engine.rundir import RunDir
from .errors import (
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_REQUEUE,
    EXIT_SAVE_FAILED,
    OneLineParser,
    UserError,
    reports_user_errors,
)

CODES = {"finished": EXIT_OK, "preempted": EXIT_REQUEUE, "nonfinite": EXIT_NONFINITE, "save_failed": EXIT_SAVE_FAILED}
NO_END = 1  # the last start wrote no end record


def starts(run_dir: Path) -> int:
    """The start records in the run's metrics (a launcher compares the count before and after)."""
    count = 0
    for line in RunDir(run_dir).metrics.read_text(errors="replace").splitlines():
        try:
            count += json.loads(line).get("kind") == "start"
        except (ValueError, AttributeError):
            continue
    return count


def last_ending(run_dir: Path) -> tuple[int, str]:
    """(train.py's exit code for the last start, one line saying how it ended)."""
    metrics = RunDir(run_dir).metrics
    if not metrics.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl; expected a run directory that has started")
    records = []
    for line in metrics.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(rec, dict) and rec.get("kind") in ("start", "end"):
            records.append(rec)
    if not records or records[-1].get("kind") != "end":
        started = sum(r.get("kind") == "start" for r in records)
        return NO_END, (f"{run_dir}: no end record after the last start ({started} start(s)): killed, crashed or "
                        "still running; the same command resumes from the last checkpoint")
    end = records[-1]
    reason = str(end.get("reason") or end.get("status"))
    step = end.get("step")
    code = CODES.get(reason, CODES.get(str(end.get("status")), NO_END))
    what = {EXIT_OK: "finished", EXIT_REQUEUE: "preempted after saving: requeue (the same command resumes)",
            EXIT_NONFINITE: "stopped: the loss became non-finite", EXIT_SAVE_FAILED: "stopped: a checkpoint could not "
            "be written"}.get(code, f"ended: {reason}")
    return code, f"{run_dir}: {what} at step {step}"


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m resnext.status", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a run directory")
    args = ap.parse_args(argv)
    code, line = last_ending(args.run_dir)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
