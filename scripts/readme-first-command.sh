#!/usr/bin/env bash
# Keeps the README's first promise: from a clean clone, its first command
# (`cargo run --release -- turn://user:pass@127.0.0.1:PORT`) answers a STUN Binding and relays
# for turnutils_uclient to a peer on 127.0.0.1.
#
# The command is read from README.md (the first `cargo run` line), so this follows the README.
# The repository's committed HEAD is cloned into a temp dir and built there (with
# CARGO_TARGET_DIR, default this checkout's target/, so dependencies are not rebuilt); then,
# inside a network namespace this script creates (lo up, nothing else), the command runs
# verbatim, readiness is polled with STUN Bindings, turnutils_stunclient sends a Binding and
# turnutils_uclient relays through it to turnutils_peer on 127.0.0.1. Only the processes
# started here are stopped (by PID); the namespace and the temp dir are deleted on exit.
#
# Needs root (ip netns), git, cargo, coturn's turnutils_* (scripts/setup.sh installs them).
# Exit status 0 when every check passed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

log() { printf '[readme-first-command] %s\n' "$*"; }
fail() { printf '[readme-first-command] FAILED: %s\n' "$*" >&2; exit 1; }

for tool in git cargo ip turnutils_stunclient turnutils_uclient turnutils_peer timeout; do
    command -v "$tool" >/dev/null 2>&1 || fail "missing $tool (scripts/setup.sh installs it)"
done

# The README's first command, exactly as written.
cmd="$(grep -m1 -E '^cargo run ' "$REPO_ROOT/README.md" || true)"
[ -n "$cmd" ] || fail "no 'cargo run' line in README.md"
log "README command: $cmd"
if [[ ! "$cmd" =~ turns?://([^:@/]+):([^@/]+)@(127\.[0-9.]+):([0-9]+) ]]; then
    fail "the README command has no turn://USER:PASS@127.x.y.z:PORT URI"
fi
user="${BASH_REMATCH[1]}" pass="${BASH_REMATCH[2]}" host="${BASH_REMATCH[3]}" port="${BASH_REMATCH[4]}"
peer_port=3490

tmp="$(mktemp -d -t stunnerd-readme.XXXXXX)"
ns="stunnerd-readme-$$"
pids=()
cleanup() {
    local pid i
    # Our processes only, by PID: TERM (the daemon drains), TERM again (exits at once), KILL.
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # Anything still in the namespace was started by this script (it is created here).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        log "stray process $pid in $ns: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
        kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

log "cloning $REPO_ROOT (HEAD $(git -C "$REPO_ROOT" rev-parse --short HEAD)) into $tmp/stunnerd"
git clone --quiet "$REPO_ROOT" "$tmp/stunnerd"
cd "$tmp/stunnerd"

# Build first (outside the namespace, with the shared target dir), so the readiness poll
# below waits for the daemon and not for the compiler. `cargo run` then finds it fresh.
log "building in the clone (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
t=$(date +%s)
cargo build --release --quiet
log "built in $(( $(date +%s) - t ))s"

ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

log "starting turnutils_peer on 127.0.0.1:$peer_port"
ip netns exec "$ns" turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
pids+=($!)

log "running in netns $ns: $cmd"
# Not through in_ns (a function would run in a subshell): `ip netns exec` and `exec` keep
# the PID, and cargo run replaces itself with the daemon, so $! is the daemon.
ip netns exec "$ns" bash -c "exec $cmd" >"$tmp/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")

# Readiness: a STUN Binding answered, polled (at most 600 tries x 0.1 s + the client's own).
stun_out=""
ready=0
for _ in $(seq 1 600); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; fail "the command exited"; }
    if stun_out="$(in_ns timeout 3 turnutils_stunclient -p "$port" "$host" 2>&1)" \
        && grep -q 'UDP reflexive addr' <<<"$stun_out"; then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || { cat "$tmp/server.log" >&2; fail "no STUN Binding answer on $host:$port"; }
log "STUN Binding answered: $(grep -m1 'UDP reflexive addr' <<<"$stun_out" | sed 's/^.*: //')"

log "turnutils_uclient -u $user -w *** -e 127.0.0.1 -r $peer_port -p $port -m 2 -n 20 -l 121 $host"
set +e
uc_out="$(in_ns timeout 60 turnutils_uclient -u "$user" -w "$pass" -e 127.0.0.1 -r "$peer_port" \
    -p "$port" -m 2 -n 20 -l 121 -z 5 "$host" 2>&1)"
uc_rc=$?
set -e
# The last `NAME=N` or `NAME ~ N` of uclient's summary, empty if absent.
summary() { { grep -oE "$1( ~ |=)[0-9]+" <<<"$uc_out" || true; } | tail -n1 | grep -oE '[0-9]+$' || true; }
sent="$(summary tot_send_msgs)" recv="$(summary tot_recv_msgs)"
sent_b="$(summary tot_send_bytes)" recv_b="$(summary tot_recv_bytes)"
log "uclient (exit $uc_rc): sent $sent msgs / ${sent_b:-?} bytes, received $recv msgs / ${recv_b:-?} bytes"
if [ "$uc_rc" -ne 0 ] || [ -z "$sent" ] || [ "$sent" != 40 ] || [ "$recv" != "$sent" ] \
    || [ -z "$recv_b" ] || [ "$recv_b" -eq 0 ]; then
    printf '%s\n--- server log ---\n' "$uc_out" >&2
    cat "$tmp/server.log" >&2
    fail "uclient did not get every message back through $host:$port"
fi
kill -0 "$server_pid" 2>/dev/null || fail "the daemon died during the relay test"
printf "%s\n" "$(grep -E "tot_(send|recv)" <<<"$uc_out" | tail -n 3)"
log "OK: the README's first command answers a STUN Binding and relays to 127.0.0.1:$peer_port"
