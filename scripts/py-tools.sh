#!/usr/bin/env bash
# Installs the Python packages the tests use beyond the standard library into one venv,
# .ci/py-tools (idempotent: kept when already there): prometheus_client, whose text-format
# parser checks pollux's /metrics (tests/metrics.rs). Prints the venv's python on success.
# Usage: scripts/py-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.ci/py-tools
want=(prometheus_client==0.26.0)
if ! "$venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}"
fi
"$venv/bin/python" -c 'import prometheus_client' >/dev/null
echo "py-tools: ${want[*]} in $venv"
