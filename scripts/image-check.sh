#!/usr/bin/env bash
# Checks the image scripts/image.sh built, without running a container (crun cannot set
# rlimits in some sandboxes, this one included): the image's metadata (user 65532, upstream's
# CMD and WORKDIR), its file list (one static, stripped binary and the sample config), and
# the binary from the image's own file system relaying for turnutils_uclient.
#
# NOT RUN IN CI (scripts/test.sh does not call it): it needs podman and the image. Run it by
# hand after scripts/image.sh; needs root (podman image mount, ip netns, chroot).
#
# The relay check runs the image's CMD with the image's user, chrooted into the mounted image
# (`podman image mount`), inside a network namespace this script creates, with
# STUNNER_ADDR=11.0.0.1: the sample config's route admits public addresses only, so the
# server and the echo peer (11.0.0.2) use two ordinary addresses added to that namespace's
# loopback device. Only the processes started here are stopped, by PID; the namespace is
# deleted and the image unmounted on exit.
#
# Usage: scripts/image-check.sh [TAG]    (default tag: localhost/stunnerd:dev)
set -euo pipefail

tag="${1:-localhost/stunnerd:dev}"
log() { printf '[image-check] %s\n' "$*"; }
fail() { printf '[image-check] FAILED: %s\n' "$*" >&2; exit 1; }
for tool in podman ip chroot file turnutils_peer turnutils_uclient turnutils_stunclient timeout; do
    command -v "$tool" >/dev/null 2>&1 || fail "missing $tool"
done

# --- metadata --------------------------------------------------------------------------
size="$(podman image inspect --format '{{.Size}}' "$tag")" || fail "no image $tag (scripts/image.sh)"
user="$(podman image inspect --format '{{.Config.User}}' "$tag")"
cmd="$(podman image inspect --format '{{json .Config.Cmd}}' "$tag")"
entrypoint="$(podman image inspect --format '{{json .Config.Entrypoint}}' "$tag")"
workdir="$(podman image inspect --format '{{.Config.WorkingDir}}' "$tag")"
log "image $tag: $size bytes ($(( (size + 524288) / 1048576 )) MiB), user $user, workdir $workdir"
log "cmd $cmd, entrypoint $entrypoint"
[ "$size" -lt $((15 * 1024 * 1024)) ] || fail "image is $size bytes, over 15 MiB"
[ "$user" = "65532:65532" ] || fail "user is '$user', not 65532:65532"
[ "$cmd" = '["stunnerd","-c","/stunnerd.conf"]' ] || fail "CMD is $cmd, not upstream's"
case "$entrypoint" in null | "[]" | "") ;; *) fail "unexpected ENTRYPOINT $entrypoint";; esac
[ "$workdir" = "/app" ] || fail "WORKDIR is '$workdir', not /app"

# --- file system -----------------------------------------------------------------------
ns="stunnerd-image-$$"
root=""
pids=()
cleanup() {
    local pid i
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    [ -z "$root" ] || podman image unmount "$tag" >/dev/null 2>&1 || true
    rm -f "${server_log:-}" "${peer_log:-}"
}
trap cleanup EXIT

root="$(podman image mount "$tag")"
log "mounted at $root"
files="$(cd "$root" && find . -mindepth 1 | sort | tr '\n' ' ')"
log "files: $files"
[ "$files" = "./app ./stunnerd.conf ./usr ./usr/bin ./usr/bin/stunnerd " ] \
    || fail "unexpected file list: $files"
info="$(file -b "$root/usr/bin/stunnerd")"
log "usr/bin/stunnerd: $(stat -c %s "$root/usr/bin/stunnerd") bytes, $info"
case "$info" in *"static"*"stripped"*) ;; *) fail "not a static stripped binary";; esac
case "$info" in *"not stripped"*) fail "not stripped";; esac

# --- the binary from the image relays --------------------------------------------------
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add 11.0.0.1/32 dev lo
ip -n "$ns" addr add 11.0.0.2/32 dev lo
server_log="$(mktemp)" peer_log="$(mktemp)"

ip netns exec "$ns" turnutils_peer -L 11.0.0.2 -p 3490 >"$peer_log" 2>&1 &
pids+=($!)
# The image's CMD as the image's user, from the image's file system; PATH as a container
# runtime sets it.
mapfile -t argv < <(podman image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$tag" | sed '/^$/d')
log "running in netns $ns: chroot --userspec=$user $root ${argv[*]} (STUNNER_ADDR=11.0.0.1)"
ip netns exec "$ns" env -i PATH=/usr/local/bin:/usr/bin:/bin STUNNER_ADDR=11.0.0.1 \
    "$(command -v chroot)" --userspec="$user" "$root" "${argv[@]}" >"$server_log" 2>&1 &
server_pid=$!
pids+=("$server_pid")

ready=0
for _ in $(seq 1 100); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; fail "the daemon exited"; }
    if out="$(ip netns exec "$ns" timeout 3 turnutils_stunclient -p 3478 11.0.0.1 2>&1)" \
        && grep -q 'UDP reflexive addr' <<<"$out"; then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || { cat "$server_log" >&2; fail "no STUN Binding answer"; }
log "STUN Binding answered: $(grep -m1 'UDP reflexive addr' <<<"$out" | sed 's/^.*: //')"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$server_pid/status")"
log "daemon pid $server_pid runs as uid $uid"
[ "$uid" = 65532 ] || fail "daemon uid $uid"

set +e
uc="$(ip netns exec "$ns" timeout 60 turnutils_uclient -u user-1 -w pass-1 -e 11.0.0.2 -r 3490 \
    -m 2 -n 20 -l 121 -z 5 11.0.0.1 2>&1)"
rc=$?
set -e
summary="$(grep -E 'tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+$' <<<"$uc" | tail -n1 || true)"
bytes="$(grep -E 'tot_send_bytes ~ [0-9]+, tot_recv_bytes ~ [0-9]+$' <<<"$uc" | tail -n1 || true)"
log "uclient (exit $rc): ${summary##*: }; ${bytes##*: }"
[ "$rc" = 0 ] && grep -q 'tot_send_msgs=40, tot_recv_msgs=40$' <<<"$summary" \
    || { printf '%s\n--- server log ---\n' "$uc" >&2; cat "$server_log" >&2; fail "uclient did not get every message back"; }
kill -0 "$server_pid" 2>/dev/null || fail "the daemon died"
log "daemon log (head):"
head -n 5 "$server_log" | sed 's/^/    /'
log "OK"
