"""A model outage under load, at length: tests/test_outage.py with a five-minute outage.

    .venv/bin/python benchmarks/outage.py [--outage 300] [--chats 30] [--every 10] [--wait 300]

`--chats` people each ask every `--every` seconds (staggered) through an adapter that edits sent messages as
Telegram and Matrix do. After 20 s the model server is stopped outright (its port refuses connections, as a vLLM
being restarted does) and comes back on the same port `--outage` seconds later; questions go on 60 s more, then
the run waits until nothing is unanswered and no answer is owed. `--wait` is CONFIDE_MODEL_WAIT_S (default 300 s,
as shipped). Runs the test module rather than a copy of it, and prints its line:

    outage: O s, Q questions (D asked during it): answered A, fallback then answered F, final fallback X,
    duplicated U, longest wait W s

Goal: X = 0 and U = 0 (no one is left with a fallback; every answer is shown once).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=30)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between one chat's questions")
    parser.add_argument("--outage", type=float, default=300.0, help="seconds the model server is gone")
    parser.add_argument("--wait", type=float, default=300.0, help="CONFIDE_MODEL_WAIT_S")
    args = parser.parse_args()
    env = {**os.environ, "CONFIDE_OUTAGE_CHATS": str(args.chats), "CONFIDE_OUTAGE_EVERY_S": str(args.every),
           "CONFIDE_OUTAGE_BEFORE_S": "20", "CONFIDE_OUTAGE_S": str(args.outage), "CONFIDE_OUTAGE_AFTER_S": "60",
           "CONFIDE_OUTAGE_WAIT_S": str(args.wait)}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_outage.py"]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in run.stdout.splitlines():
        if "outage: " in line:
            print(line[line.index("outage: ") :].rstrip(".F"))
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-2000:], sep="\n", file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
