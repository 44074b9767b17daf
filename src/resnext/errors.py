"""The one user-error base class, every exit code, and how a program reports a user mistake (argparse too)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import NoReturn

EXIT_OK = 0  # finished
EXIT_CHECK_FAILED = 1  # a check found problems: `resnext.data verify` (bad files), `resnext.export` (outputs differ)
EXIT_USER_ERROR = 2  # bad input: one line on stderr naming what is wrong and what would be right
EXIT_NONFINITE = 3  # the loss became NaN/inf; nothing saved after the last good checkpoint
EXIT_SAVE_FAILED = 4  # a checkpoint could not be written (disk full, I/O error, permission)
EXIT_INTERRUPTED = 130  # Ctrl-C before training started, or a second Ctrl-C: nothing saved (128 + SIGINT)
EXIT_REQUEUE = 75  # stopped by a signal after saving: requeue me (EX_TEMPFAIL)
EXIT_PIPE_CLOSED = 141  # the reader of stdout went away (`... | head`): the rest is dropped quietly (128 + SIGPIPE)


class UserError(Exception):
    """A mistake in what the user gave (config, data, checkpoint, paths, arguments).

    Reported as one line on stderr with exit code 2 and no traceback. Anything that is not a
    UserError is a bug and keeps its traceback.
    """


class ConfigError(UserError):
    """A mistake in the configuration: an unknown key, a bad value, an impossible combination."""


class DataError(UserError):
    """A mistake in the data: a missing or empty folder, an unreadable or corrupt file."""


class CheckpointError(UserError):
    """A checkpoint or weights file that is missing, unreadable, unsafe or for another model."""


class NoPublishedWeights(UserError, ValueError):
    """Pretrained weights were asked for (torch.hub's ``pretrained=True``); this project publishes none."""


class SaveError(Exception):
    """A checkpoint could not be written (not the user's input: the disk). Exit code 4, one line."""


def printable(text: str) -> str:
    """``text`` with control characters (newlines, escape codes from a folder or file name) written as
    Python escapes, so a name cannot break a line or drive the terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def fail(message: str) -> NoReturn:
    """Report a user mistake: one line on stderr (names in it escaped), exit code 2, no traceback."""
    print(f"error: {printable(message)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage mistakes end in one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see --help)")


def reports_user_errors(main: Callable[..., object]) -> Callable[..., object]:
    """Wrap a program's ``main``: a UserError ends in ``fail``; stdout closed by its reader (``| head``) ends
    quietly with EXIT_PIPE_CLOSED, as a Unix tool killed by SIGPIPE; any other exception propagates."""

    @wraps(main)
    def wrapper(*args, **kwargs):
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
            return result
        except UserError as e:
            fail(str(e))
        except BrokenPipeError:
            # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_PIPE_CLOSED)

    return wrapper
