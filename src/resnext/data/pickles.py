"""Read the pickles of data files (CIFAR batches and names) without running any code they could carry."""

from __future__ import annotations

import pickle
from pathlib import Path

from ..errors import DataError

# A pickle names each callable it needs (GLOBAL module.name) and the unpickler imports and calls it: a
# file can run anything that way. The official CIFAR files hold dicts, lists, strings, bytes and ints
# (no GLOBAL needed) and NumPy arrays, which are rebuilt by the callables below; nothing else is allowed.
ARRAYS = {
    ("numpy.core.multiarray", "_reconstruct"),  # arrays, as NumPy 1.x (and the official files) wrote them
    ("numpy._core.multiarray", "_reconstruct"),  # the same, as NumPy 2 writes them
    ("numpy", "ndarray"),  # the class _reconstruct builds
    ("numpy", "dtype"),  # an array's element type
    # NumPy's reduction at pickle protocol 5 (Python 3.14's default): an array from its bytes, no more
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


def _latin1(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocols 0-2 (batches written with protocol=2 by
    Python 3): only ``str.encode('latin1')``, no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a bytes literal")
    return text.encode("latin1")


class _Refused(pickle.UnpicklingError):
    """A GLOBAL outside the allowed set (its ``module.name`` is the message)."""


class DataUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` hands out only NumPy's array rebuilders (and bytes literals)."""

    def find_class(self, module: str, name: str):
        if (module, name) in ARRAYS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise _Refused(f"{module}.{name}")


def read_pickle(path: str | Path) -> object:
    """The object pickled in the data file ``path`` (Python 2 strings come back as bytes, as the official
    batches need). A file that asks for any other callable is refused with a one-line DataError, before
    that callable is imported or run; other read errors propagate (OSError, UnpicklingError, ...)."""
    with open(path, "rb") as f:
        try:
            return DataUnpickler(f, encoding="bytes").load()
        except _Refused as e:
            raise DataError(f"{path}: refused, it holds objects a CIFAR batch does not (GLOBAL {e})") from None
