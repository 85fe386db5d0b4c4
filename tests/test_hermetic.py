"""The suite is hermetic (issue 21): run in the shell of an operator who has configured Confide (a model, a data
directory, mail, a default model none of the tests knows), tests pass as they do anywhere. Before, test_outage.py
failed after 196 s there: "answering ... without a model: model 'm' unavailable"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOSTILE = {
    "CONFIDE_MODELS": json.dumps({"m": {"base_url": "http://127.0.0.1:9/v1", "model": "shell-model", "timeout_s": 1}}),
    "CONFIDE_DEFAULT_MODEL": "m",
    "CONFIDE_DATA_DIR": "/nonexistent/confide-data",
    "CONFIDE_EMAIL__SMTP_ENABLED": "true",
    "CONFIDE_EMAIL__RELAY_HOST": "127.0.0.1",
    "CONFIDE_EMAIL__FROM_ADDRESS": "confide@example.org",
    "CONFIDE_RETRIEVAL__MIN_RELEVANCE": "0.99",
    "CONFIDE_PERSONS": json.dumps([{"id": "stranger", "name": "Stranger", "accounts": ["telegram:100"]}]),
}


def test_tests_do_not_read_the_callers_confide_settings(tmp_path: Path) -> None:
    env = {**os.environ, **HOSTILE}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--reruns=0",
         "tests/test_reanswer.py", "tests/test_quiet_terminal.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
