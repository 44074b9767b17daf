"""Where a program writes: checked before any work starts, so a bad output path costs one line, not a run.

A folder is usable when it is, or can become, a folder this process can write in; that is tried for real
(a scratch file or folder, removed at once), since root passes ``os.access`` on a read-only mount and
``/proc`` or ``/sys`` accept no new files whatever their modes say.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder(folder: Path, name: str, create: bool = False) -> None:
    """UserError (one line starting with ``name``, e.g. "hydra.run.dir=X" or "--out X") unless ``folder``
    is, or can be created as, a writable folder; ``create`` then makes it."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{name} is a file; give a folder (it is created if missing)")
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise UserError(f"{name}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == folder else f"cannot be created ({existing} is not writable)"
        raise UserError(f"{name} {what}; give a folder you can write to")
    try:
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".resnext-probe-"))
    except OSError as e:
        what = "is not writable" if existing == folder else f"cannot be created in {existing}"
        raise UserError(f"{name} {what} ({e.strerror}); give a folder you can write to") from None
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{name}: cannot create the folder ({e.strerror})") from None


def check_file(path: Path, name: str) -> None:
    """UserError unless ``path`` can be written as a file: not a folder, not a symbolic link (never followed),
    in a folder that is, or can be created, writable (the caller creates it when it writes)."""
    if path.is_symlink():
        raise UserError(f"{name} is a symbolic link; give a new path or a plain file to replace "
                        "(links are not followed)")
    if path.is_dir():
        raise UserError(f"{name} is a folder; give a file path such as {path / 'model'}")
    check_folder(path.parent, f"{name}: its folder {path.parent}")
