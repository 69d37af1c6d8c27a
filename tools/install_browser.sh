#!/usr/bin/env bash
# Install the browser the end-to-end widget test drives (tests/browser): Debian's `chromium`.
# Idempotent: does nothing when the browser is already there. Needs root or sudo and apt.
# Override the browser with CHROMIUM=/path/to/chromium (then nothing is installed).
set -euo pipefail

BROWSER="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$BROWSER" ]; then
    echo "browser: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
    exit 0
fi

fail() {
    echo "ERROR: could not install Chromium for the browser test (tests/browser): $1" >&2
    echo "       Install it yourself (Debian/Ubuntu: 'sudo apt-get install -y chromium')," >&2
    echo "       or point CHROMIUM=/path/to/chromium at a Chromium/Chrome binary." >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (not a Debian-based system)"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    fail "installing packages needs root or password-less sudo"
fi

echo "Installing Debian's chromium (for the browser test)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || fail "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
    || fail "apt-get install chromium failed"
[ -x "$BROWSER" ] || fail "apt-get finished but $BROWSER is missing"
echo "browser: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
