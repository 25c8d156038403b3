#!/usr/bin/env bash
# Runs the Dockerfile's build stage without a container engine, on exactly the files it
# copies: every `COPY` of the stage (`FROM ... AS build` up to the next `FROM`) is copied
# into an empty temp dir, its `ENV` lines are exported, and its `RUN` lines run there in
# order. A file the build needs but the Dockerfile does not copy fails the build here as it
# would in `docker build`.
#
# The one step not run is the stage's `apt-get` line (the system packages: on the host,
# scripts/setup.sh installs them). The stage's WORKDIR is the temp dir.
#
# CARGO_TARGET_DIR (default: this checkout's target/) is reused so dependencies are not
# rebuilt from scratch; the sources compiled are the temp dir's. The stage's `out/` (the
# runtime stage's files) is checked (a static, stripped stunnerd with the eBPF offload built in,
# and /stunnerd.conf) and,
# with `--out DIR`, copied to DIR (scripts/image.sh feeds it to `podman build`).
#
# Usage: scripts/dockerfile-build-steps.sh [--out DIR]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

log() { printf '[dockerfile-build-steps] %s\n' "$*"; }
fail() { printf '[dockerfile-build-steps] FAILED: %s\n' "$*" >&2; exit 1; }

out_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out_dir="${2:?--out needs a directory}"; shift 2;;
        *) fail "unknown argument: $1";;
    esac
done

tmp="$(mktemp -d -t stunnerd-dockerfile.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
ctx="$tmp/src"
mkdir -p "$ctx"

# The build stage's instructions, continuation lines joined, comments dropped.
stage="$(awk '
    /^[[:space:]]*#/ { next }
    { line = line $0 }
    /\\$/ { sub(/\\$/, "", line); next }
    { print line; line = "" }
' "$REPO_ROOT/Dockerfile" | awk '
    toupper($1) == "FROM" { if (in_stage) exit; if (tolower($NF) == "build") in_stage = 1; next }
    in_stage && NF > 0 { print }
')"
[ -n "$stage" ] || fail "no 'FROM ... AS build' stage in Dockerfile"

copy() { # COPY SRC... DEST, relative to the repo and to the stage's workdir
    local args=("$@") dest n i src
    n=${#args[@]}
    [ "$n" -ge 2 ] || fail "COPY needs a source and a destination: COPY $*"
    dest="${args[$((n - 1))]}"
    for ((i = 0; i < n - 1; i++)); do
        src="${args[$i]}"
        case "$src" in --*) fail "COPY flag not supported here: $src";; esac
        [ -e "$REPO_ROOT/$src" ] || fail "COPY source missing in the repository: $src"
        if [ -d "$REPO_ROOT/$src" ]; then
            mkdir -p "$ctx/$dest"
            cp -a "$REPO_ROOT/$src/." "$ctx/$dest/"
        elif [[ "$dest" == */ ]] || [ "$n" -gt 2 ]; then
            mkdir -p "$ctx/$dest"
            cp -a "$REPO_ROOT/$src" "$ctx/$dest/"
        else
            mkdir -p "$(dirname "$ctx/$dest")"
            cp -a "$REPO_ROOT/$src" "$ctx/$dest"
        fi
    done
}

while IFS= read -r line; do
    instr="${line%%[[:space:]]*}"
    rest="${line#"$instr"}"
    rest="${rest#"${rest%%[![:space:]]*}"}"
    case "${instr^^}" in
        COPY)
            log "COPY $rest"
            # shellcheck disable=SC2086 # paths in the Dockerfile have no spaces
            copy $rest
            ;;
        ENV)
            log "ENV $rest"
            eval "export $rest"
            ;;
        RUN)
            if [[ "$rest" == *apt-get* ]]; then
                log "skipped (system packages; scripts/setup.sh): RUN $rest"
                continue
            fi
            log "RUN $rest"
            t=$(date +%s)
            (cd "$ctx" && bash -euo pipefail -c "$rest") || fail "RUN $rest"
            log "    ($(( $(date +%s) - t ))s)"
            ;;
        WORKDIR | ARG | LABEL | USER | EXPOSE | CMD | ENTRYPOINT | SHELL) ;;
        *) fail "unsupported instruction in the build stage: $line";;
    esac
done <<<"$stage"

bin="$ctx/out/usr/bin/stunnerd"
[ -x "$bin" ] || fail "the stage made no out/usr/bin/stunnerd"
[ -f "$ctx/out/stunnerd.conf" ] || fail "the stage made no out/stunnerd.conf"
info="$(file -b "$bin" 2>/dev/null || true)"
log "out/usr/bin/stunnerd: $(stat -c %s "$bin") bytes; ${info:-?}"
case "$info" in
    *"dynamically linked"*) fail "stunnerd is dynamically linked";;
    *"not stripped"*) fail "stunnerd is not stripped";;
esac
version="$("$bin" --version)" || fail "the static stunnerd does not run"
log "stunnerd --version: $version"
# The image is what Kubernetes users run: it must carry the kernel offload (build.rs needs
# clang and libbpf-dev, which the stage installs and scripts/setup.sh installs here).
case "$version" in
    *"eBPF offload built in"*) ;;
    *) fail "the image's stunnerd has no eBPF offload ($version): does the Dockerfile copy build.rs and bpf/?";;
esac

if [ -n "$out_dir" ]; then
    mkdir -p "$out_dir"
    cp -a "$ctx/out/." "$out_dir/"
    log "copied out/ to $out_dir"
fi
log "OK"
