#!/usr/bin/env bash
# Build the fuzz targets coverage-guided on a stable toolchain, and run them.
#
#   fuzz/fuzz.sh build                 build every target
#   fuzz/fuzz.sh smoke [SECONDS]       run each target over its corpus for SECONDS (default 10)
#   fuzz/fuzz.sh run TARGET [ARGS...]  run one target over its corpus with libFuzzer ARGS
#                                      (e.g. -max_total_time=600); new inputs land in a
#                                      scratch corpus under fuzz/target, not in the repo
#
# Coverage instrumentation without a nightly toolchain: LLVM's SanitizerCoverage pass is
# enabled with stable `-C passes` / `-C llvm-args` flags (the same counters cargo-fuzz asks
# for), and libfuzzer-sys links libFuzzer. What stable cannot give is AddressSanitizer
# (`-Z sanitizer`), which safe Rust does not need; overflow checks and debug assertions are on
# (fuzz/Cargo.toml's profile), so an arithmetic overflow is a crash.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_DIR/target/$TRIPLE/release"
TARGETS=(stun_message channel_data stream_framing config_decode k8s_load core_sequence stun_diff)

# Per-target input size limit (bytes).
max_len() {
    case "$1" in
        config_decode | k8s_load) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

build() {
    # --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
    RUSTFLAGS="-Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares" \
        cargo build --manifest-path "$FUZZ_DIR/Cargo.toml" --release --locked \
        --target "$TRIPLE" -j "${FUZZ_JOBS:-2}"
}

# run TARGET ARGS...: the repo corpus is read-only input; new finds go to a scratch dir.
run() {
    local t="$1"
    shift
    local scratch="$FUZZ_DIR/target/corpus/$t"
    mkdir -p "$scratch" "$FUZZ_DIR/artifacts/$t"
    local dict=()
    case "$t" in
        stun_message | stun_diff | stream_framing | channel_data) dict=("-dict=$FUZZ_DIR/dict/stun.dict") ;;
        config_decode) dict=("-dict=$FUZZ_DIR/dict/config.dict") ;;
        k8s_load) dict=("-dict=$FUZZ_DIR/dict/k8s.dict") ;;
    esac
    "$BIN_DIR/$t" "${dict[@]}" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$FUZZ_DIR/artifacts/$t/" "$@" "$scratch" "$FUZZ_DIR/corpus/$t"
}

case "${1:-}" in
    build) build ;;
    smoke)
        secs="${2:-10}"
        for t in "${TARGETS[@]}"; do
            log="$FUZZ_DIR/target/smoke-$t.log"
            if run "$t" -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
                printf '    %-15s ok: %s\n' "$t" "$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions"
            else
                tail -40 "$log"
                echo "fuzz target $t FAILED (log: $log)" >&2
                exit 1
            fi
        done
        ;;
    run)
        shift
        run "$@"
        ;;
    *)
        echo "usage: $0 build | smoke [SECONDS] | run TARGET [LIBFUZZER-ARGS...]" >&2
        exit 2
        ;;
esac
