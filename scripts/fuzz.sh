#!/usr/bin/env bash
# Runs one cargo-fuzz (libFuzzer) target of fuzz/ for a bounded time and prints what it did:
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]
#   scripts/fuzz.sh list
#
# Targets are the files fuzz/src/bin/*.rs (adding one is adding a file there). The run
# starts from the committed seeds (fuzz/seeds/TARGET/, read only) plus the working corpus
# (fuzz/corpus/TARGET/, not committed, where libFuzzer adds what it finds) and uses the
# dictionary fuzz/seeds/TARGET.dict when there is one. A crash input lands in
# fuzz/artifacts/TARGET/ and the script exits non-zero; replay it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# Environment: FUZZ_SANITIZER (address | none; default address), FUZZ_TOOLCHAIN (default
# nightly), FUZZ_JOBS is deliberately not offered: one target on one core at a time.
# Builds go to $CARGO_TARGET_DIR when set (else fuzz/target). cargo-fuzz is installed from
# crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-address}

targets() { for f in fuzz/src/bin/*.rs; do basename "$f" .rs; done; }

if [[ ${1:-} == list ]]; then
    targets
    exit 0
fi
if [[ $# -lt 2 || ! $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer flags...] | $0 list" >&2
    echo "targets: $(targets | tr '\n' ' ')" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2
if [[ ! -f fuzz/src/bin/$target.rs ]]; then
    echo "no fuzz target '$target'; targets: $(targets | tr '\n' ' ')" >&2
    exit 2
fi
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/$target
seeds=fuzz/seeds/$target
mkdir -p "$corpus" "fuzz/artifacts/$target"
dirs=("$corpus")
[[ -d $seeds ]] && dirs+=("$seeds")
flags=(-max_total_time="$seconds" -print_final_stats=1 -print_pcs=0)
[[ -f fuzz/seeds/$target.dict ]] && flags+=(-dict="$root/fuzz/seeds/$target.dict")

log=$(mktemp "${TMPDIR:-/tmp}/pollux-fuzz-$target.XXXXXX.log")
echo "fuzzing $target for ${seconds}s (sanitizer $sanitizer; log $log)" >&2
# -a: debug assertions (integer overflow checks) in the fuzzed code.
set +e
cargo "+$toolchain" fuzz run -a -s "$sanitizer" "$target" "${dirs[@]}" -- \
    "${flags[@]}" "$@" 2>&1 | tee "$log" \
    | grep -E --line-buffered '(pulse|DONE|INITED|panicked|==[0-9]+== ?ERROR|SUMMARY|Test unit written)'
status=${PIPESTATUS[0]}
set -e

echo "---- $target: summary ----"
final=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
echo "last status line: ${final:-none}"
grep -E '^stat::' "$log" || true
cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$final")
ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$final")
execs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]+([0-9]+)/\1/p' "$log")
rate=$(sed -nE 's/^stat::average_exec_per_sec:[[:space:]]+([0-9]+)/\1/p' "$log")
echo "target=$target seconds=$seconds execs=${execs:-?} execs_per_sec=${rate:-?} cov=${cov:-?} ft=${ft:-?} corpus=$(ls "$corpus" | wc -l)"
if [[ $status -ne 0 ]]; then
    echo "FAILED (status $status): see $log and fuzz/artifacts/$target/" >&2
fi
exit "$status"
