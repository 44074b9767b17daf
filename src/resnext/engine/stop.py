"""Stop requests: the signals that ask a run to save and stop (USR1, TERM, Ctrl-C), seen by one rank."""

from __future__ import annotations

import os
import signal

from ..errors import EXIT_INTERRUPTED


class StopFlag:
    """Set by SIGUSR1, SIGTERM or SIGINT (Ctrl-C) on this rank; ``agreed`` once every rank has seen a request.

    A second Ctrl-C aborts at once, without saving (exit 130). Python runs a signal's handler once for all
    its deliveries while the main thread is inside one long operation (a convolution on a loaded machine),
    so Ctrl-Cs are counted from a wakeup pipe, where the interpreter writes one byte per delivery
    (``signal.set_wakeup_fd``): two presses 0.3 s apart are two, whenever the handler runs.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False  # a signal reached this process
        self.agreed = False  # some rank had a request at the last agreement: all ranks stop there
        self.interrupts = 0  # Ctrl-Cs seen
        self._old: dict = {}
        self._pipe: tuple[int, int] | None = None  # (read, write) ends of the wakeup pipe
        self._old_wakeup = -1

    def _deliveries(self) -> int:
        """SIGINT deliveries written to the wakeup pipe since the last look."""
        count = 0
        while self._pipe is not None:
            try:
                data = os.read(self._pipe[0], 512)
            except BlockingIOError:
                break
            if not data:
                break
            count += data.count(bytes([signal.SIGINT]))
        return count

    def _handle(self, signum, frame) -> None:
        self.requested = True
        presses = self._deliveries()
        if signum == signal.SIGINT:
            self.interrupts += max(presses, 1)
        else:
            self.interrupts += presses
        if self.interrupts > 1:
            os.write(2, b"error: interrupted twice: aborted without saving\n")
            os._exit(EXIT_INTERRUPTED)

    def __enter__(self) -> StopFlag:
        self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._old_wakeup = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        except ValueError:  # not the main thread: count handler calls only
            self._close_pipe()
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in self._pipe or ():
            os.close(fd)
        self._pipe = None

