"""Host memory for training on the CPU: freed tensor memory kept for the next step instead of handed back.

glibc's malloc serves every block over 32 MiB (a batch's activations, their gradients) with a fresh
``mmap`` and returns it to the kernel on free, and trims the top of its heap once that holds a few freed
blocks. A CPU training step allocates the same large blocks every step, so every step page-faults them in
again: ResNeXt-50 at batch 256 and 64 px on the 2-core machine faulted 0.03-1.5 million pages (0.1-6 GB)
per two steps, depending on what ran before in the process, and a BN layer's forward that writes a new
64 MB tensor took 22.6 ms against 5.1 ms writing into one already mapped. With malloc told to keep its
blocks (no ``mmap`` per block, no trimming below 2 GiB free) the steps after the first fault nothing and
run 10-25% faster (docs/perf/cpu-ghost-bn.json). The cost: the process keeps its peak heap until it exits,
which a training process reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import functools

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_KEEP_BELOW = 2**31 - 1  # freed bytes at the heap's top kept before trimming (mallopt takes an int)


@functools.cache
def keep_freed_memory() -> bool:
    """Tell this process's malloc to reuse freed blocks (see the module's text); True where it took (glibc's
    malloc), False elsewhere: another C library, or an allocator preloaded in glibc's place (jemalloc,
    tcmalloc), which is then left alone."""
    try:
        process = ctypes.CDLL(None)  # the symbols the process resolves: a preloaded allocator's first
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(process, "mallopt"):
        return False  # not glibc
    if ctypes.cast(process.malloc, ctypes.c_void_p).value != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
        return False  # malloc is not glibc's: its mallopt would tune an allocator nobody uses
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW))
