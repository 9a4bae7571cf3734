#!/usr/bin/env bash
# pollux's test command (README, CI): every unit and integration test of the crate.
# SPDK's own rpc.py is exercised too when it is installed (.ci/run runs
# scripts/spdk-releases.sh, which puts every release in .ci/spdk-releases/;
# or set POLLUX_SPDK_RPC to an `spdk-rpc` executable).
set -euo pipefail
cd "$(dirname "$0")/.."
newest=$(scripts/spdk-releases.sh --list | tail -1)
if [[ -z "${POLLUX_SPDK_RPC:-}" && -x .ci/spdk-releases/$newest/bin/spdk-rpc ]]; then
    export POLLUX_SPDK_RPC="$PWD/.ci/spdk-releases/$newest/bin/spdk-rpc"
fi
exec cargo test --all-targets "$@"
