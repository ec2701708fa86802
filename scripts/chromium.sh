#!/usr/bin/env sh
# Debian's chromium for the console's browser tests (tests/test_console_browser.py drives it with Playwright;
# `playwright install` is never used). Installs it when it is missing and we are root with apt-get, quietly
# and once per checkout (again under CI). Without it the browser tests skip locally and fail under CI.
set -eu
cd "$(dirname "$0")/.."
wanted=""
[ -x /usr/bin/chromium ] || wanted="chromium"
# fonts-wqy-microhei: Chinese glyphs in the tests' screenshots.
if ! { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; }; then
  wanted="$wanted fonts-wqy-microhei"
fi
[ -z "$wanted" ] && exit 0
marker=.venv/.qunbot-chromium-tried
if [ -f "$marker" ] && [ -z "${CI:-}" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $wanted for the browser tests (apt-get)" >&2
  # shellcheck disable=SC2086 # a list of package names
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $wanted; } >/dev/null 2>&1; then
    echo "installed $wanted" >&2
  else
    echo "could not install $wanted: browser tests skip without chromium (and fail under CI)" >&2
  fi
else
  echo "missing $wanted and not root with apt-get: browser tests skip without chromium (and fail under CI)" >&2
fi
mkdir -p .venv && touch "$marker"
