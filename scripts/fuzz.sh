#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of everything that decodes untrusted bytes:
#
#   record    record payloads and frames
#   recovery  opening a log over arbitrary segment bytes, with and without repair
#   snapshot  a checkpoint's snapshot
#   config    the YAML configuration file
#   api_json  the API's JSON bodies (batch publish, queue settings)
#
#   scripts/fuzz.sh                    # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh   # the long run: 10 minutes per target
#   scripts/fuzz.sh recovery snapshot  # some targets
#
# Installs cargo-fuzz if it is missing. cargo fuzz builds with nightly features: the nightly
# toolchain if there is one, else the installed toolchain with RUSTC_BOOTSTRAP=1. Seeds come
# from fuzz/seeds and from real logs and snapshots written by the test suite; corpora grow in
# fuzz/corpus/<target> (not committed). Any crash is kept in fuzz/artifacts/<target> and fails
# the script: reproduce it with `cargo fuzz run <target> <file>` from fuzz/, then fix it with a
# regression test beside the code.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(record recovery snapshot config api_json)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

# Seeds from the code itself, so that they always have the current format.
seeds="$PWD/fuzz/corpus"
mkdir -p "$seeds"
SYNCBROK_FUZZ_SEEDS="$seeds" cargo test -q -p syncbrok-storage --lib write_fuzz_seeds -- --ignored >/dev/null
SYNCBROK_FUZZ_SEEDS="$seeds" cargo test -q -p syncbrok-space --lib write_fuzz_seed -- --ignored >/dev/null

cd fuzz
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    if [ -d "seeds/$t" ]; then
        cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    fi
    echo "== fuzz $t for ${seconds}s"
    if ! cargo "${toolchain[@]}" fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=1048576 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "/tmp/syncbrok-fuzz-$t.log" | grep -E '^(#[0-9]+.*DONE|==[0-9]+==|SUMMARY|stat::number_of_executed_units|stat::peak_rss_mb|Done)|panicked|crash-'; then
        :
    fi
    if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in ${failed[*]} (fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no finding in ${targets[*]} (${seconds}s each)"
