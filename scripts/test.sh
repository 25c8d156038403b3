#!/usr/bin/env bash
# Full local/CI check: tool setup, formatting, lints, release build, optional fuzz build,
# and every test (unit, property, integration incl. real TURN clients).
# Exits non-zero on the first failure.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

step() { printf '\n==> %s\n' "$*"; }
elapsed() { printf '    (%ss)\n' "$(( $(date +%s) - $1 ))"; }

step "setup (scripts/setup.sh)"
t=$(date +%s)
bash scripts/setup.sh
elapsed "$t"

step "cargo fmt --check"
t=$(date +%s)
cargo fmt --all -- --check
elapsed "$t"

step "cargo clippy --all-targets --features turnperf -- -D warnings"
t=$(date +%s)
cargo clippy --all-targets --features turnperf -- -D warnings
elapsed "$t"

# The container image's build stage (Dockerfile stage 1) on exactly the files it copies, in a
# temp dir: a file the Dockerfile forgets to COPY fails here. No container engine runs in CI
# (scripts/image.sh and scripts/image-check.sh build and check the image by hand).
step "Dockerfile build stage on its copied files (scripts/dockerfile-build-steps.sh)"
t=$(date +%s)
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}" bash scripts/dockerfile-build-steps.sh
elapsed "$t"

# The README's first command, verbatim, from a clean clone in a network namespace of its own,
# answering a STUN Binding and relaying for turnutils_uclient (reuses target/ for dependencies;
# its `cargo run --release` is also the release build of the checkout: the Dockerfile step
# above builds the release binary with --locked).
step "README's first command from a clean clone (scripts/readme-first-command.sh)"
t=$(date +%s)
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}" bash scripts/readme-first-command.sh
elapsed "$t"

# Fuzz targets: every target built coverage-guided on stable (fuzz/fuzz.sh: SanitizerCoverage
# through stable -C flags, libFuzzer from libfuzzer-sys) and each run for 10 s over its corpus
# in fuzz/corpus, so none can rot and a regression on a seed input fails CI. The 10-minute runs
# are done by hand (fuzz/README.md).
step "fuzz targets: build and smoke-run (10 s each)"
t=$(date +%s)
bash fuzz/fuzz.sh build
bash fuzz/fuzz.sh smoke 10
elapsed "$t"

# `--features turnperf` builds the load generator that tests/turnperf.rs drives.
step "cargo test --features turnperf"
t=$(date +%s)
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
set +e
# Safety net: a hung test must not eat the whole CI budget.
timeout 1500 cargo test --features turnperf 2>&1 | tee "$test_log"
rc=${PIPESTATUS[0]}
set -e
elapsed "$t"

step "cargo test summary"
grep -E '^test result:|^     Running|^   Doc-tests' "$test_log" || true
if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ]; then
        echo "cargo test timed out after 1500 s" >&2
    fi
    echo "cargo test FAILED (exit $rc)" >&2
    exit "$rc"
fi
echo "all checks passed"
