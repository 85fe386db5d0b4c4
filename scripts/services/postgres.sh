#!/usr/bin/env bash
# PostgreSQL for the state store's tests on its second backend: benchmarks/peers.py runs a private cluster on
# loopback (its data on tmpfs); the system service is never started or configured here.
# Idempotent: nothing is installed when initdb is already there. Runs as root (CI, scripts/test.sh).
set -euo pipefail

have() { compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; }

if have; then
  exit 0
fi
if [[ $EUID -ne 0 ]]; then
  echo "postgres.sh: PostgreSQL is missing; run as root to install it" >&2
  exit 1
fi
apt-get update
# The package's own cluster is not wanted: the tests start theirs.
mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
have || { echo "postgres.sh: PostgreSQL still missing after install" >&2; exit 1; }
