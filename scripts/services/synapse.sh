#!/usr/bin/env bash
# Synapse (a Matrix homeserver) for the Matrix adapter's tests: tests/synapse.py runs a private
# instance on loopback. Its own virtual environment, shared between checkouts on this machine so CI
# reuses it; nothing is configured or started here. Idempotent and quick when already installed.
set -euo pipefail

version="${SYNAPSE_VERSION:-1.163.2}"
root="${XDG_CACHE_HOME:-$HOME/.cache}/confide-services/synapse"
marker="$root/installed-$version"

if [[ -e "$marker" && -x "$root/venv/bin/python" ]]; then
  exit 0
fi
python="${PYTHON:-python3}"
mkdir -p "$root"
[[ -x "$root/venv/bin/python" ]] || "$python" -m venv "$root/venv"
pip=("$root/venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install "matrix-synapse==$version"
"$root/venv/bin/python" -c "import synapse.app.homeserver" || {
  echo "synapse.sh: Synapse $version does not import after install" >&2
  exit 1
}
touch "$marker"
