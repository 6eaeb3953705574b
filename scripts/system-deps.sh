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
# A Compose CLI for tests/deploy (`docker-compose config -q` validates docker-compose.yml; it
# needs no Docker engine). Debian's docker-compose, without its recommended engine packages.
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >/dev/null
    else
        echo "system-deps: no Compose CLI and not root; the Compose CLI check in tests/deploy will be skipped" >&2
    fi
fi
# kubectl for tests/deploy (`kubectl kustomize` renders every kustomization; no cluster needed).
if ! command -v kubectl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubectl >/dev/null
    else
        echo "system-deps: kubectl missing and not root; tests/deploy cannot render the manifests" >&2
    fi
fi
