#!/usr/bin/env bash
# Installs every SPDK rpc.py release pollux promises to work with (the PyPI package `spdk`,
# stdlib-only) into its own venv: .ci/spdk-releases/VERSION/bin/spdk-rpc. Idempotent: a
# release already installed is kept. tests/spdk_releases.rs drives pollux with each.
# Usage: scripts/spdk-releases.sh [--list]
set -euo pipefail
cd "$(dirname "$0")/.."
RELEASES=(25.5 25.5.1 25.9 26.1 26.5 26.9)
if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${RELEASES[@]}"
    exit 0
fi
dir=.ci/spdk-releases
mkdir -p "$dir"
pids=()
for v in "${RELEASES[@]}"; do
    [[ -x "$dir/$v/bin/spdk-rpc" ]] && continue
    (
        rm -rf "$dir/$v"
        python3 -m venv "$dir/$v"
        "$dir/$v/bin/pip" install --quiet --disable-pip-version-check "spdk==$v"
    ) &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for v in "${RELEASES[@]}"; do
    if [[ ! -x "$dir/$v/bin/spdk-rpc" ]]; then
        echo "spdk-releases: SPDK rpc.py $v could not be installed into $dir/$v" >&2
        status=1
    fi
done
((status == 0)) && echo "spdk-releases: ${RELEASES[*]} in $dir"
exit $status
