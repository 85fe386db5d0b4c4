"""Chaos at length: the suite's chaos test (tests/test_chaos.py) with many kill/stop cycles per platform.

    .venv/bin/python benchmarks/chaos.py [--cycles 50] [--seed N]

Runs `confide serve` against the same real peers as the suite (the Bot API server of the tests, Postfix,
Synapse), so it
runs the test module rather than a copy of it, and prints one line per platform:
`chaos: PLATFORM cycles C accepted A lost L duplicated D drain S s` (S: the longest graceful stop), with the
in-doubt sends the README documents and how many stops were SIGKILLs and SIGTERMs. `--cycles N` runs N cycles
ending in SIGKILL and N ending in SIGTERM, in a seeded order; each sends 4 messages and stops the process at a
random moment; the last start answers what is left and is stopped with SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--only", choices=["telegram", "email", "matrix"], nargs="+", help="these platforms only")
    args = parser.parse_args()
    env = {**os.environ, "CONFIDE_CHAOS_CYCLES": str(args.cycles), "CONFIDE_CHAOS_SEED": str(args.seed)}
    # Each platform's `confide serve` log stays in this folder (printed on a failure), for a look afterwards.
    logs = tempfile.mkdtemp(prefix="confide-chaos-")
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", f"--basetemp={logs}",
               "tests/test_chaos.py", *(["-k", " or ".join(args.only)] if args.only else [])]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    # pytest's progress dots share the lines the test prints: take each report from its "chaos:" on.
    for line in run.stdout.splitlines():
        if "chaos: " in line:
            print(line[line.index("chaos: ") :].rstrip(".F"))
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-2000:], f"logs: {logs}", sep="\n", file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
