#!/usr/bin/env bash
# Install Confide with its test dependencies into ./.venv, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
