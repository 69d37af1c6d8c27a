#!/usr/bin/env bash
# Find the browser the end-to-end widget test drives (tests/browser), installing Debian's `chromium`
# when there is none and this machine can (apt and root or password-less sudo).
#   exit 0  a browser is there (or was installed): its path on stdout, which `make test-browser`
#           passes on as CHROMIUM
#   exit 3  none here, and none can be installed (no apt, or no root/sudo): the reason, one line on
#           stdout; `make test` skips the browser tests with it, `.ci/run` (BROWSER_TESTS=required) fails
#   exit 1  an install was tried and failed, or $CHROMIUM points at nothing runnable (stderr says why)
# Looks at $CHROMIUM, then chromium, chromium-browser, google-chrome(-stable) on PATH, then the macOS apps.
set -uo pipefail

say() { echo "$@" >&2; }
found() {
    say "browser: $("$1" --version 2>/dev/null || echo "$1")"
    echo "$1"
    exit 0
}

if [ -n "${CHROMIUM:-}" ]; then
    [ -x "$CHROMIUM" ] && found "$CHROMIUM"
    say "ERROR: CHROMIUM=$CHROMIUM is not an executable file; point it at a Chromium or Chrome binary."
    exit 1
fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    path=$(command -v "$name" 2>/dev/null) && [ -x "$path" ] && found "$path"
done
for path in "/Applications/Chromium.app/Contents/MacOS/Chromium" \
            "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; do
    [ -x "$path" ] && found "$path"
done

cannot() {
    echo "no Chromium or Chrome found, and none can be installed here ($1)"
    exit 3
}
command -v apt-get >/dev/null 2>&1 || cannot "no apt-get: not a Debian-based system"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    cannot "installing packages needs root or password-less sudo"
fi

fail() {
    say "ERROR: could not install Chromium for the browser tests (tests/browser): $1"
    say "       Install it yourself (Debian/Ubuntu: 'sudo apt-get install -y chromium'), or set CHROMIUM=/path/to/chromium."
    exit 1
}
say "Installing Debian's chromium (for the browser tests)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || fail "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
    || fail "apt-get install chromium failed"
[ -x /usr/bin/chromium ] || fail "apt-get finished but /usr/bin/chromium is missing"
found /usr/bin/chromium
