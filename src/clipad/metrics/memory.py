"""Give freed heap memory back to the operating system after each evaluator update (glibc only).

Why: an update allocates large short-lived arrays (16-bit levels, per-class level copies, histograms) between
the small long-lived state tensors. Once glibc has freed a large mmapped block it raises its mmap threshold and
serves such arrays from the heap, where the small survivors pin the freed space: the resident size then grew by
~18 MiB per batch of 32 maps of 256x256 spread over many classes while the states held 32 MiB in all
(bench/eval_scale.py). malloc_trim(0) returns those free pages; a call took about 0.05 ms here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)  # absent from non-glibc C libraries (musl, macOS)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return free heap pages to the OS where the C library can (a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
