#!/usr/bin/env bash
# System packages the test suite needs: Debian's Chromium for the dashboard's
# browser tests (Playwright drives it through executable_path; no browser download).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    else
        echo "system-deps: /usr/bin/chromium missing and not root; browser tests will be skipped" >&2
    fi
fi
