#!/usr/bin/env bash
# pollux's test command (README, CI): every unit and integration test of the crate.
# SPDK's own rpc.py is exercised too when it is installed (.ci/run puts it in .ci/venv;
# or set POLLUX_SPDK_RPC to an `spdk-rpc` executable).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${POLLUX_SPDK_RPC:-}" && -x .ci/venv/bin/spdk-rpc ]]; then
    export POLLUX_SPDK_RPC="$PWD/.ci/venv/bin/spdk-rpc"
fi
exec cargo test --all-targets "$@"
