"""A deadline for every test phase (setup, call, teardown): a hang fails one test with the stacks of every
asyncio task and thread, instead of holding the whole run until CI's own limit kills it without a word.

Past the deadline the session's event loop is stopped (the running phase fails with "Event loop stopped before
Future completed"; the rest of the suite runs on). A phase that still does not end within the grace period (a
hang outside the loop) ends the run. CONFIDE_TEST_DEADLINE_S sets the deadline (0: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import sys
import threading
from collections.abc import Generator, Iterator

import pytest

DEADLINE_S = float(os.environ.get("CONFIDE_TEST_DEADLINE_S", "600"))
GRACE_S = float(os.environ.get("CONFIDE_TEST_GRACE_S", "60"))
_loop: asyncio.AbstractEventLoop | None = None
_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


@pytest.fixture(scope="session", autouse=True)
async def _session_loop() -> None:
    """The loop every async test and fixture runs on (asyncio_default_*_loop_scope = session)."""
    global _loop
    _loop = asyncio.get_running_loop()


def _report(phase: str, nodeid: str) -> None:
    err = sys.__stderr__
    assert err is not None
    print(f"\n=== {nodeid} ({phase}) is still running after {DEADLINE_S:.0f} s; tasks and threads: ===", file=err)
    if _loop is not None and _loop.is_running():
        for task in asyncio.all_tasks(_loop):
            print(f"--- task {task.get_name()}: {task.get_coro()!r}", file=err)
            task.print_stack(limit=12, file=err)
    faulthandler.dump_traceback(file=err, all_threads=True)
    err.flush()


def _stop_unless_ended(phase: str, nodeid: str, ended: threading.Event) -> None:
    """On the loop: a phase that ended meanwhile is left alone, so the next test is never the one stopped."""
    if ended.is_set():
        return
    _report(phase, nodeid)
    assert _loop is not None
    _loop.stop()


def _expire(phase: str, nodeid: str, ended: threading.Event) -> None:
    if _loop is not None and _loop.is_running():  # an async phase: stopping the loop ends it
        _loop.call_soon_threadsafe(_stop_unless_ended, phase, nodeid, ended)
    else:
        _report(phase, nodeid)
    if not ended.wait(GRACE_S):
        capture = _config.pluginmanager.getplugin("capturemanager") if _config is not None else None
        if capture is not None:  # what is printed now must reach the terminal, not a capture that is never shown
            capture.suspend_global_capture(in_=False)
        _report(phase, nodeid)
        print(f"=== {nodeid} ({phase}) did not end after the loop was stopped: ending the run ===", file=sys.__stderr__)
        os._exit(3)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _deadline("setup", item.nodeid):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _deadline("call", item.nodeid):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with _deadline("teardown", item.nodeid):
        return (yield)


@contextlib.contextmanager
def _deadline(phase: str, nodeid: str) -> Iterator[None]:
    ended = threading.Event()
    timer = threading.Timer(DEADLINE_S, _expire, (phase, nodeid, ended)) if DEADLINE_S > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        ended.set()
        if timer is not None:
            timer.cancel()
