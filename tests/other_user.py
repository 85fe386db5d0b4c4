"""Another local Unix user, for tests of what such a user can and cannot reach (the suite runs as root, as CI does)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from dataclasses import dataclass

import pytest

OTHER_USER = "confide-other"


@dataclass(frozen=True)
class OtherUser:
    name: str
    python: str  # an interpreter that user may run (Confide's may live under /root)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.python, *args], user=self.name, group=self.name, extra_groups=[],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        )  # fmt: skip


@pytest.fixture(scope="module")
def other_user() -> OtherUser:
    if os.geteuid() != 0:
        pytest.skip("becoming another Unix user needs root")
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OTHER_USER], check=True)
    for python in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable):
        try:
            subprocess.run([python, "-c", "pass"], user=OTHER_USER, group=OTHER_USER, extra_groups=[], check=True)
        except (OSError, subprocess.CalledProcessError):
            continue
        return OtherUser(OTHER_USER, python)
    pytest.skip(f"no Python interpreter that {OTHER_USER} may run")
