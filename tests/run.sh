#!/usr/bin/env bash
# The test command: installs what the tests need (redis-server, the venv), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/bootstrap.sh
ensure_debian_packages redis-server:redis-server redis-cli:redis-tools promtool:prometheus
ensure_venv test
.venv/bin/python -m pytest "$@"
