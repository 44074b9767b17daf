"""Checkpoints: atomic writes, a kept previous copy, weights-only loading with fallback, RNG state."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .rundir import private_umask

LAST, PREVIOUS, BEST = "last.pt", "last.prev.pt", "best.pt"


class _Writer:
    """A file's write(), remembering the OS error that torch.save turns into an opaque RuntimeError."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _save(obj: Any, f) -> None:
    """torch.save into ``f``; a failed write (disk full, I/O error) raises its OSError, not torch's
    "unexpected pos" RuntimeError."""
    w = _Writer(f)
    try:
        torch.save(obj, w)
    except RuntimeError:
        if w.error is not None:
            raise w.error from None
        raise


def atomic_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """Write ``obj`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    With ``keep_previous`` the file being replaced is first renamed to ``last.prev.pt``, so a complete
    checkpoint exists at every instant; a failure midway leaves the old files untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~private_umask())  # mkstemp makes 0600 whatever the umask
        if keep_previous and path.exists():
            os.replace(path, path.with_name(PREVIOUS))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def safe_load(path: Path) -> dict:
    """torch.load with weights_only=True; anything else (code-carrying pickles, junk) is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(f"{path}: refused, it holds objects a weights-only load does not allow "
                              f"({first[:160]})") from None
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    return obj


def load_latest(ckpt_dir: Path, warn) -> tuple[dict | None, Path | None]:
    """(the newest loadable training checkpoint: last.pt, else last.prev.pt with a warning, or None; the
    unloadable last.pt it fell back from, or None).

    The unloadable last.pt is left where it is: a start that goes on moves it aside (``move_aside``) so the
    next save's rotation cannot turn the good last.prev.pt into a copy of it; a refused start changes nothing.
    """
    last, prev = ckpt_dir / LAST, ckpt_dir / PREVIOUS
    if last.exists():
        try:
            return safe_load(last), None
        except CheckpointError as e:
            if not prev.exists():
                raise
            warn(f"warning: {e}; falling back to {prev}")
            return safe_load(prev), last
    if prev.exists():
        return safe_load(prev), None
    return None, None


def move_aside(corrupt: Path) -> Path:
    """Rename an unloadable checkpoint ``corrupt-<time>`` beside it; returns the new path."""
    target = corrupt.with_name(f"{corrupt.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(corrupt, target)
    return target


def rng_state(device: torch.device) -> dict:
    """Python, NumPy, torch CPU (and this rank's CUDA) generator states, in weights-only-loadable types."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict, device: torch.device) -> None:
    version, seq, gauss = state["python"]
    random.setstate((version, tuple(seq), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
