"""Freed memory goes back to the system (bridge/ops/memory.py): without it, glibc keeps the blocks an encoder's
batch frees in its heap, and an import held the peak of every batch (benchmarks/mbox_memory.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A batch as an encoder's run makes it, in a worker thread as encoders run (asyncio.to_thread): one large block
# freed (glibc then serves blocks of that size from its heap), then large working blocks, each followed by a small
# one that lives on (so the heap's top cannot shrink), and the working blocks freed. Prints the MB still held.
WORKLOAD = """
import ctypes, threading
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def resident_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024
def batch(held):
    large = libc.malloc(16 << 20); ctypes.memset(large, 1, 16 << 20); libc.free(large)
    before, working, kept = resident_mb(), [], []
    for _ in range(40):
        block = libc.malloc(4 << 20); ctypes.memset(block, 1, 4 << 20); working.append(block)
        kept.append(libc.malloc(64))
    for block in working:
        libc.free(block)
    held.append(resident_mb() - before)
held = []
worker = threading.Thread(target=batch, args=(held,)); worker.start(); worker.join()
print(held[0])
"""


def held_after_batches(setup: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", setup + WORKLOAD], capture_output=True, text=True, timeout=60, check=True
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's thresholds exist on Linux only")
def test_freed_blocks_go_back_to_the_system_once_the_core_is_imported() -> None:
    without = held_after_batches("")
    with_core = held_after_batches("import bridge\n")
    assert without > 40  # glibc alone keeps much of the 160 MB of freed working blocks
    assert with_core < 10, (without, with_core)


def test_the_thresholds_are_set_on_this_system() -> None:
    from bridge.ops.memory import return_freed_memory

    assert return_freed_memory() is sys.platform.startswith("linux")
