"""Under Hydra's submitit launcher: submitit's time-limit signal saves like USR1, then submitit requeues the point.

`python train.py -m hydra/launcher=submitit_slurm ...` runs each sweep point as a Slurm job through submitit.
Before a job's time limit submitit sends its signal (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise) and
its handler requeues the job from inside whatever is running, without saving. Here that signal becomes the
trainer's own stop request (USR1: finish the step, save ``last.pt``, exit 75); once the trainer has saved,
submitit's handler runs: the launcher's ``checkpoint()`` resubmits the same point, ``scontrol requeue`` puts
the job back, and its next start resumes from the run directory. Requeues on time limits need
``hydra.launcher.max_num_timeout`` > 0 (submitit counts them). A preemption (TERM; Slurm requeues the job
itself with PreemptMode=REQUEUE) and a cancel need nothing here: the trainer saves and stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator


def _time_limit_signal() -> signal.Signals | None:
    """submitit's time-limit signal in one of its jobs, else None (not launched by submitit)."""
    if "SUBMITIT_FOLDER" not in os.environ:  # set by submitit's job runner
        return None
    try:
        from submitit import JobEnvironment
    except ImportError:
        return None
    return JobEnvironment._usr_sig()


@contextlib.contextmanager
def save_then_requeue() -> Iterator[Callable[[], None]]:
    """While training, submitit's time-limit signal asks the trainer to save and stop; the yielded function,
    called after the trainer stopped (exit 75), hands over to submitit's handler (requeue, then exit)."""
    sig = _time_limit_signal()
    if sig is None:
        yield lambda: None
        return
    submitit_handler = signal.getsignal(sig)
    got: list[int] = []

    def forward(signum, frame) -> None:
        got.append(signum)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
            submitit_handler(signum, frame)  # not training (nothing to save): submitit requeues at once
        else:
            os.kill(os.getpid(), signal.SIGUSR1)  # the trainer's stop request: save at an agreed step

    def after_save() -> None:
        if got and callable(submitit_handler):
            submitit_handler(got[0], None)

    signal.signal(sig, forward)
    try:
        yield after_save
    finally:
        signal.signal(sig, submitit_handler)
