#!/usr/bin/env bash
# Install a real headless Chromium (Debian's `chromium` package) for the tests that open an HTML
# page in a browser (tests/support/browser.py). Idempotent: when /usr/bin/chromium is already
# there it only prints its version.
#
# fonts-dejavu-core gives the page a font to render text with on a machine that has none.
set -euo pipefail

say() { printf '>> install-chromium: %s\n' "$*"; }

CHROMIUM=/usr/bin/chromium
PACKAGES=(chromium fonts-dejavu-core)

have_chromium() { [ -x "$CHROMIUM" ]; }

version() { "$CHROMIUM" --version 2>/dev/null | head -n1 || true; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

if have_chromium; then
    say "present: $(version)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "ERROR: $CHROMIUM is missing and there is no apt-get here;"
    say "install Chromium at $CHROMIUM and run this again"
    exit 1
fi
if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    say "ERROR: $CHROMIUM is missing; installing it needs root (or sudo)"
    exit 1
fi

say "apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
say "apt-get install ${PACKAGES[*]} (no recommends)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >/dev/null

if ! have_chromium; then
    say "ERROR: the chromium package installed, but $CHROMIUM is not there"
    exit 1
fi
if ! "$CHROMIUM" --version >/dev/null 2>&1; then
    say "ERROR: $CHROMIUM is installed but does not run:"
    "$CHROMIUM" --version 2>&1 | sed 's/^/    /' >&2 || true
    exit 1
fi
say "installed: $(version)"
