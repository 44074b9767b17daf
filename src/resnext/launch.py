"""`python -m resnext.launch [torchrun options] train.py [overrides]`: torchrun, ending the way train.py ends.

torchrun exits 1 after any signal or failed worker and prints its own traceback, so a run stopped by Slurm or
Ctrl-C after saving looks like a crash. This runs the same launcher (torch.distributed.run, every option
of it) and then reads how the run ended from its run directory (resnext.status): one line, and train.py's
exit code: 75 saved (requeue me), 0 finished, 2 a refused start, 3/4 as train.py; a worker that was killed
or crashed is named in one line, exit 1.

    python -m resnext.launch --standalone --nproc_per_node=8 train.py +recipe=resnext50_32x4d_imagenet data.root=...
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .engine.rundir import RunDir
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR

SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


def run_dir_of_command(cmd_args: list[str]) -> Path | None:
    """The run directory of a train.py command (as train.py resolves it), or None for another program."""
    if not cmd_args or Path(cmd_args[0]).name != "train.py":
        return None
    from .compose import run_dir_of
    from .errors import UserError

    try:
        return Path(run_dir_of([a for a in cmd_args[1:] if not a.startswith("-")]))
    except UserError:
        return None


def ended(run_dir: Path | None, starts_before: int) -> tuple[int, str] | None:
    """(exit code, line) from the run's end record, if this launch's start wrote one."""
    if run_dir is None or not RunDir(run_dir).metrics.is_file():
        return None
    from .status import last_ending, starts

    if starts(run_dir) <= starts_before:
        return None
    code, line = last_ending(run_dir)
    return (code, line) if code != 1 else None


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from .status import starts

    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its tracebacks and summaries
    run_dir = run_dir_of_command([args.training_script, *args.training_script_args])
    before = starts(run_dir) if run_dir is not None and RunDir(run_dir).metrics.is_file() else 0
    failure = ""
    try:
        run(args)
        return EXIT_OK
    except SignalException as e:
        failure = f"the launcher was stopped by {SIGNALS.get(int(e.sigval), e.sigval)}"
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        if codes == {EXIT_USER_ERROR}:
            return EXIT_USER_ERROR  # train.py said why, in one line
        rank, first = e.get_first_failure()  # torchrun's root cause: the earliest failure
        how = (f"was killed by {SIGNALS.get(-first.exitcode, -first.exitcode)}" if first.exitcode < 0
               else f"exited {first.exitcode}")
        failure = f"process {rank} {how}"
    except KeyboardInterrupt:
        failure = "interrupted"
    result = ended(run_dir, before)
    if result is not None:
        print(result[1], flush=True)
        return result[0]
    print(f"error: {failure}; the run did not save an ending (the same command resumes from its last "
          "checkpoint)", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED if failure == "interrupted" else 1


if __name__ == "__main__":
    sys.exit(main())
