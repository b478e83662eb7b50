#!/usr/bin/env bash
# Make sure headless Chromium and its matching WebDriver are here for the demo page's browser
# test: Debian's `chromium` and `chromium-driver` (same version, so they always agree; test
# tools' own browser downloads cannot work offline). Idempotent; installs with apt-get only
# when something is missing and we are root; bounded in time. Without root it says what to
# run, and the browser test skips only if no chromium can be found at all.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "the demo page's browser test needs chromium and chromium-driver: run" \
    "'sudo apt-get install -y chromium chromium-driver'" >&2
  exit 0
fi
if ! have apt-get; then
  echo "no apt-get here: install Chromium and its chromedriver by hand for the browser test" >&2
  exit 0
fi

echo "installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq >/dev/null || true
timeout 900 apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null

have chromium && have chromedriver || {
  echo "chromium-driver was installed but chromium/chromedriver are not on PATH" >&2
  exit 1
}
