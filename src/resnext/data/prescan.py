"""A fast check of the training files before the first step: a bad file found at start costs one line, not a
run that dies hours into its first epoch.

Per file: its header (JPEG frame or PNG IHDR: the format its name claims, a size no decoder refuses) and, for
a JPEG, its end-of-image marker, which a truncated download lacks. That reads a few kilobytes per file, in
threads, on every process (so none waits in a collective while another reads); what was found good is
remembered in the run directory (by size and modification time), so a resume checks only new or changed
files. A full decode of every file is `python -m resnext.data verify`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DataError
from .imagenet_augment import image_size

HEAD = 65536  # bytes read from the start of a file: JPEG markers before the frame header fit in it
TAIL = 1024  # bytes from the end searched for the JPEG end-of-image marker (cameras may append a little)


def file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a training image by its header and ending, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - TAIL))
            tail = f.read(TAIL)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not head:
        return "empty file"
    png, suffix = head.startswith(b"\x89PNG"), Path(path).suffix.lower()
    if suffix == ".png" and not png:
        return "not a PNG file"
    if suffix != ".png" and png:
        return f"PNG data in a {Path(path).suffix} file"
    if suffix != ".png" and not head.startswith(b"\xff\xd8"):
        return "not a JPEG file"
    try:
        image_size(head)
    except ValueError as e:
        return str(e)
    if not png and b"\xff\xd9" not in tail:
        return "truncated (no JPEG end-of-image marker)"
    return None


def prescan(files: list[str], workers: int, known: dict[str, list[int]], say=print) -> dict[str, list[int]]:
    """The files among ``files`` known good afterwards ({path: [size, mtime_ns]}): those in ``known`` unchanged,
    and the rest checked now, in ``workers`` threads. DataError naming the bad ones (the first few, and how
    many); nothing is written here (the caller records the result once its start goes on)."""
    stats, todo = {}, []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            todo.append(f)
            continue
        stats[f] = [st.st_size, st.st_mtime_ns]
        if known.get(f) != stats[f]:
            todo.append(f)
    if todo:
        start = time.perf_counter()
        say(f"checking {len(todo)} training file(s) (headers and endings; {len(files) - len(todo)} known good)")
        with ThreadPoolExecutor(max(1, workers)) as pool:
            found = list(pool.map(file_problem, todo, chunksize=256))
        bad = [(f, why) for f, why in zip(todo, found, strict=True) if why]
        seconds = time.perf_counter() - start
        say(f"  checked in {seconds:.1f} s ({1e4 * seconds / len(todo):.1f} s per 10k files); {len(bad)} bad")
        if bad:
            first = "; ".join(f"{f}: {why}" for f, why in bad[:3])
            raise DataError(f"{len(bad)} training file(s) cannot be used: {first}{'; ...' if len(bad) > 3 else ''} "
                            "(`python -m resnext.data verify` lists them all; remove them, or data.prescan=false to "
                            "meet them during training)")
    return {f: stats[f] for f in files if f in stats}
