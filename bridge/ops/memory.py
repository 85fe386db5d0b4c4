"""Freed memory goes back to the system: glibc keeps the large blocks an encoder's run frees in its heap.

Every batch the encoders embed allocates large arrays (MiniLM's activations, USE's features) and frees them. glibc
serves blocks under its mmap threshold from the heap, and that threshold rises with each large block freed (up to
32 MB), so after the first batches a process holds the peak of its batches as free heap it never returns. Fixing
the threshold at 2 MiB (larger blocks are mapped and unmapped with each batch), and trimming the heap's top from
2 MiB, measured here on 2,080 texts through the default embedder: peak 410-426 MB against 450-495 MB, held after
the batches 353-381 MB against 399-459 MB, at 30-32 s against 29-30 s. 1 MiB held less (peak 360 MB) but ran 38%
slower: MiniLM's activations of about 1.5 MB each were then mapped afresh every run.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 2 << 20


def return_freed_memory() -> bool:
    """Set glibc's thresholds; False where the C library is not glibc (musl, macOS): they keep their own ways."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library (no ldconfig run to find it)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1
    if not done:
        # logging is imported here only: this runs as the core is imported, before `confide serve` holds its stop
        # signals (bridge/launch.py), and logging's import (6 ms) widened the window where a SIGTERM kills it
        import logging

        logging.getLogger(__name__).warning("glibc refused its memory thresholds: the process may hold freed memory")
    return done
