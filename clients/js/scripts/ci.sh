#!/bin/sh
# CI for the JS SDK (clients/js): clean install, unit tests, the compile test
# of typed messages (relay types -lang ts + tsc), then the
# end-to-end tests against the real relay (go build ./cmd/relay) and Chromium.
# Fails, never skips, when a prerequisite is missing.
#
#   clients/js/scripts/ci.sh          (from anywhere; `make test` calls it)
#
# Environment: CHROMIUM_PATH (default /usr/bin/chromium), E2E_TIMEOUT_MS
# (default 600000). Go builds offline (GOPROXY=off) unless GOPROXY is set.
set -eu
cd "$(dirname "$0")/.."

CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH
missing=0
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "ci.sh: Chromium not found at $CHROMIUM_PATH; the browser end-to-end tests need it." >&2
  echo "ci.sh: install it with:  apt-get update && apt-get install -y chromium   (or set CHROMIUM_PATH)" >&2
  missing=1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "ci.sh: go not found; the end-to-end tests build the relay with it (https://go.dev/dl/)." >&2
  missing=1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "ci.sh: npm not found; install Node.js 18 or newer." >&2
  missing=1
fi
[ "$missing" -eq 0 ] || exit 1

npm ci --no-audit --no-fund
npm test
npm run test:types
# The SDKs used from this checkout as the READMEs say (file: and npm pack,
# Go replace and workspace), in a temporary directory.
../../scripts/from-checkout.sh
# WeChat's Build npm (miniprogram-ci packNpm, from npm) on examples/miniprogram.
npm run test:packnpm
npm run test:e2e
