#!/usr/bin/env bash
# strace, unshare and ip for tests/test_egress.py, which runs Confide in a network namespace that has only
# loopback and records every connection it makes. Idempotent; runs as root (CI, scripts/test.sh).
set -euo pipefail

have() { command -v strace >/dev/null && command -v unshare >/dev/null && command -v ip >/dev/null; }

if have; then
  exit 0
fi
if [[ $EUID -ne 0 ]]; then
  echo "egress.sh: strace, unshare (util-linux) or ip (iproute2) is missing; run as root to install them" >&2
  exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends strace util-linux iproute2
have || { echo "egress.sh: strace, unshare or ip still missing after install" >&2; exit 1; }
