"""Stop requests: the signals that ask a run to save and stop (USR1, TERM, Ctrl-C), seen by one rank."""

from __future__ import annotations

import os
import signal

from ..errors import EXIT_INTERRUPTED


class StopFlag:
    """Set by SIGUSR1, SIGTERM or SIGINT (Ctrl-C) on this rank; ``agreed`` once every rank has seen a request.

    A second Ctrl-C aborts at once, without saving (exit 130).
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False  # a signal reached this process
        self.agreed = False  # some rank had a request at the last agreement: all ranks stop there
        self.interrupts = 0  # Ctrl-Cs seen
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                os.write(2, b"error: interrupted twice: aborted without saving\n")
                os._exit(EXIT_INTERRUPTED)

    def __enter__(self) -> StopFlag:
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
