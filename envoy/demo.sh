#!/usr/bin/env bash
# The demo command: Envoy + distill-guard (memory store, demo keys and rules) + a mock model API.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/bootstrap.sh
ensure_debian_packages curl:curl
ensure_venv demo
exec .venv/bin/distill-guard demo "$@"
