#!/usr/bin/env bash
# Postfix and Dovecot for the email adapter's tests (tests/mailservers.py runs private instances on
# loopback high ports; the system services are never started or configured here).
# Idempotent: nothing is installed when the binaries are already there. Runs as root (CI, scripts/test.sh).
set -euo pipefail

have() { [[ -x /usr/sbin/postfix && -x /usr/sbin/dovecot && -e /usr/lib/dovecot/lmtp && -e /usr/lib/dovecot/imap ]]; }

if have; then
  exit 0
fi
if [[ $EUID -ne 0 ]]; then
  echo "mail.sh: Postfix and Dovecot are missing; run as root to install them" >&2
  exit 1
fi
# Without this preseed the postfix package asks which configuration to write.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix dovecot-imapd dovecot-lmtpd
have || { echo "mail.sh: Postfix or Dovecot still missing after install" >&2; exit 1; }
