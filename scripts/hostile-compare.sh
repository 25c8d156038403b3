#!/usr/bin/env bash
# The hostile suite against our stunnerd and against Debian's coturn, side by side
# (docs/security.md). By hand, not in CI: it takes several minutes and floods.
#
#   nice -n 10 bash scripts/hostile-compare.sh [PROBE...]
#
# PROBEs: flood allocations idle_tcp bursts large (default: all). For each probe and each
# server, the ignored test `hostile_compare::measure` (tests/it/hostile_compare.rs) runs in a
# network namespace this script makes (lo up, nothing else) and deletes afterwards; it starts
# the server under the probe's descriptor limit (prlimit), drives the probe and prints what it
# saw. stunnerd is the release build with its defaults; coturn is `turnserver -c
# /etc/turnserver.conf` plus the flags listed in tests/it/hostile_compare.rs. The table goes
# to stdout and to target/hostile-compare/table.md, each run's full output beside it.
#
# Needs root (ip netns), coturn (turnserver, turnutils_uclient, turnutils_peer) and prlimit:
# scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

probes=("$@")
[ ${#probes[@]} -gt 0 ] || probes=(flood allocations idle_tcp bursts large)
for p in "${probes[@]}"; do
    case $p in
        flood | allocations | idle_tcp | bursts | large) ;;
        *) echo "unknown probe: $p" >&2; exit 2 ;;
    esac
done
for tool in ip prlimit turnserver turnutils_uclient turnutils_peer python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found (scripts/setup.sh)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 2; }

out=target/hostile-compare
mkdir -p "$out"
rm -f "$out"/*.log "$out/cells.tsv" "$out/table.md"

# What the trap cleans up: the namespace of the current run and the PID of its runner.
ns=""
runner=""
cleanup() {
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill "$runner" 2>/dev/null || true
        wait "$runner" 2>/dev/null || true
    fi
    runner=""
    if [ -n "$ns" ]; then
        # Whatever is still running in our namespace (a server or client the runner left
        # behind when it was killed), by PID.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    fi
    ns=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release stunnerd, test binary)..." >&2
cargo build --release -j2 --bin stunnerd >&2
bin=$(cargo test -j2 --test it --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "it":
        print(m["executable"])
')
[ -x "$bin" ] || { echo "no test binary" >&2; exit 1; }

failed=0
for probe in "${probes[@]}"; do
    for target in stunnerd coturn; do
        ns="hostile-cmp-$$-$probe-$target"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        log="$out/$probe-$target.log"
        echo "probe $probe against $target..." >&2
        set +e
        timeout --signal=TERM 300 ip netns exec "$ns" env \
            HOSTILE_NETNS="$ns" HOSTILE_TARGET="$target" HOSTILE_PROBE="$probe" \
            HOSTILE_STUNNERD="$PWD/target/release/stunnerd" \
            "$bin" hostile_compare::measure --exact --ignored --nocapture --test-threads=1 \
            >"$log" 2>&1 &
        runner=$!
        wait "$runner"
        rc=$?
        set -e
        runner=""
        if [ "$rc" -ne 0 ] || ! grep -q "test result: ok. 1 passed" "$log"; then
            echo "  $probe against $target failed (exit $rc), see $log" >&2
            printf '%s\t%s\t%s\t%s\n' "$probe" "$probe: the run" "$target" \
                "failed (exit $rc), see $log" >>"$out/cells.tsv"
            failed=1
        fi
        # (the first CELL may share its line with the harness's "test ... " prefix)
        grep -o $'CELL\t.*' "$log" | while IFS=$'\t' read -r _ row text; do
            printf '%s\t%s\t%s\t%s\n' "$probe" "$row" "$target" "$text"
        done >>"$out/cells.tsv" || true
        cleanup
    done
done

{
    echo "Measured $(date -u +%Y-%m-%d) on commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests || echo ' (with local changes)'),"
    echo "$(turnserver --version 2>/dev/null | head -1 | sed 's/^/coturn /') (Debian package $(dpkg-query -W -f='${Version}' coturn 2>/dev/null || echo '?')),"
    echo "kernel $(uname -r), $(nproc) cores: \`nice -n 10 bash scripts/hostile-compare.sh\`"
    echo
    echo "| probe | stunnerd (defaults) | coturn (Debian defaults) |"
    echo "| --- | --- | --- |"
    awk -F'\t' '
        { key = $1 SUBSEP $2
          if (!(key in seen)) { seen[key] = 1; order[++n] = key; label[key] = $2 }
          cell[key, $3] = $4 }
        END { for (i = 1; i <= n; i++) { k = order[i]
                s = cell[k, "stunnerd"]; c = cell[k, "coturn"]
                printf "| %s | %s | %s |\n", label[k], (s == "" ? "-" : s), (c == "" ? "-" : c) } }
    ' "$out/cells.tsv"
} | tee "$out/table.md"
exit "$failed"
