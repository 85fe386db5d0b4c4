#!/usr/bin/env bash
# Install Confide with its test dependencies into ./.venv, install the real peers the tests run
# against (scripts/services/*.sh), then run the whole test suite: ruff, mypy (bridge/, adapters/), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
for service in scripts/services/*.sh; do
  [[ -e "$service" ]] && bash "$service"
done
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
