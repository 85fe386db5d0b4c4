"""tests/deadline.py: a test that hangs fails with the stacks of what hangs, and the run goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HUNG = """
import asyncio
import time


async def test_hangs():
    await asyncio.Event().wait()


def test_slow_but_within_the_grace_period():
    time.sleep(3)


async def test_after_it():
    await asyncio.sleep(0.5)
"""


def test_a_hung_test_fails_with_the_stacks_of_its_tasks_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    repo = Path(__file__).resolve().parent.parent
    options = ["asyncio_mode=auto", "asyncio_default_fixture_loop_scope=session",
               "asyncio_default_test_loop_scope=session"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo), "CONFIDE_TEST_DEADLINE_S": "2", "CONFIDE_TEST_GRACE_S": "10"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.deadline", "-p", "no:cacheprovider", "-q", "--rootdir",
         str(tmp_path), *[a for o in options for a in ("-o", o)], str(tmp_path / "test_hung.py")],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert "1 failed, 2 passed" in output, output
    assert "RuntimeError: Event loop stopped before Future completed" in output
    assert "test_hung.py::test_hangs (call) is still running after 2 s" in output
    assert "test_hangs" in output.split("is still running")[1], "no stack of the hung test's task"
