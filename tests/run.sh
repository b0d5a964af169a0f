#!/bin/sh
# The whole test suite, from a fresh machine: system packages for the real servers the
# tests start (Dovecot with LMTP and Sieve, SpamAssassin, Chromium, Postfix, mutt), a virtualenv with
# the test extras, then lint, types and pytest. `.ci/run` calls exactly this.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="dovecot-imapd dovecot-lmtpd dovecot-sieve spamassassin chromium postfix mutt"
missing=""
for pkg in $PACKAGES; do
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null
    else
        echo "missing Debian packages:$missing (tests that need them will skip and say so)"
    fi
fi
# Postfix is installed for smtp-sink only; its own daemon must not hold port 25.
if command -v postfix >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check outreach tests bench
.venv/bin/ruff format --check outreach
.venv/bin/mypy outreach
# the pipeline's layers (pyproject.toml [tool.importlinter]): a backward import fails here
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
