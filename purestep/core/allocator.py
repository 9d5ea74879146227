"""Keep freed CPU memory for reuse (glibc), so per-step tensors do not page-fault.

A training step frees and re-allocates the same large buffers every step (gradients,
optimizer intermediates, new states). With glibc's defaults, blocks above the mmap
threshold are mapped and unmapped each time and the heap top is trimmed back to the OS,
so every step pays page faults on fresh memory: on the 2-core benchmark VM this made the
W1 step 1.5-2x slower and very noisy, for the imperative loop and the pure step alike.
``retain_freed_cpu_memory()`` raises both thresholds so glibc recycles those blocks.
It is process-wide and off by default; ``purestep bench`` turns it on for every variant.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["retain_freed_cpu_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_cpu_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Ask glibc to serve and keep blocks up to ``threshold_bytes`` from its heap.

    Returns True if the settings took effect (False off glibc, e.g. on macOS or musl).
    """
    if threshold_bytes <= 0:
        raise ValueError(f"threshold_bytes must be > 0, got {threshold_bytes}")
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    value = min(threshold_bytes, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
