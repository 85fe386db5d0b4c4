"""A big import while the bot answers, at length: tests/test_import_while_serving.py with 10,000 messages.

    .venv/bin/python benchmarks/import_while_serving.py [--messages 10000] [--every 2]

`confide import whatsapp` of a chat of `--messages` messages is handed to a running `confide serve` (over its
local socket) while a person asks on Telegram (the Bot API server of the tests) every `--every` seconds; both run
as real subprocesses with the tests' model server. Runs the test module rather than a copy of it, and prints
the answer times while idle and during the import, and

    import while serving: N messages in T s, Q questions during it answered A (p50 P s, p95 R s), both finished
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
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between questions during the import")
    args = parser.parse_args()
    env = {**os.environ, "CONFIDE_IMPORT_SERVING_MESSAGES": str(args.messages),
           "CONFIDE_IMPORT_SERVING_EVERY_S": str(args.every)}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
               "tests/test_import_while_serving.py"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in run.stdout.splitlines():
        if line.startswith("  ") or "import while serving: " in line:
            print(line.rstrip(".F"))
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-2000:], sep="\n", file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
