"""Freed memory kept for reuse while a segment is analysed in a process that returns it eagerly.

Dask's nanny starts workers with glibc's ``MALLOC_TRIM_THRESHOLD_`` at 64 KiB, so they hand freed memory back
to the operating system at once. That setting also fixes glibc's mmap threshold at 128 KiB, so every buffer
the Blosc2 decoder allocates per chunk (the chunk's size, 512 KiB) is mapped and faulted in anew: 129 page
faults per chunk, which made the same segment analysis 1.6x slower on a Dask worker than in a plain process
(``scripts/dask_benchmark.py``; qlab's readers decode into reused buffers, but the decoder's own working
buffers are allocated per chunk). For the length of a segment task, the thresholds go back to what glibc's
own adaptive defaults settle at for such buffers; the process's values are restored afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT_MMAP_THRESHOLD = 128 * 1024
_TASK_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's adaptive maximum on 64-bit
_TASK_TRIM_THRESHOLD = 64 * 1024 * 1024  # twice the mmap threshold, as glibc's adaptation keeps it

_lock = threading.Lock()
_active = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, or None on any other C library (mallopt's parameters are glibc's)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def freed_memory_reused() -> Iterator[None]:
    """Within the block, glibc keeps freed buffers for reuse; does nothing unless ``MALLOC_TRIM_THRESHOLD_`` is
    set (a Dask worker) and the C library is glibc. Nested and concurrent uses restore once, at the last exit:
    the trim threshold to ``MALLOC_TRIM_THRESHOLD_``, the mmap threshold to ``MALLOC_MMAP_THRESHOLD_`` or
    glibc's initial 128 KiB."""
    global _active
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    libc = _glibc() if trim.isdigit() else None
    if libc is None:
        yield
        return
    with _lock:
        _active += 1
        if _active == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _TASK_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _TASK_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, int(trim))
                mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
                libc.mallopt(_M_MMAP_THRESHOLD, int(mmap) if mmap.isdigit() else _GLIBC_DEFAULT_MMAP_THRESHOLD)
                libc.malloc_trim(0)  # what the task freed goes back now, as Dask expects
