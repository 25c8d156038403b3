#!/usr/bin/env bash
# turnperf-scale.sh - server memory per allocation and authenticated allocation setup rate
# at N concurrent allocations (default N in {10000, 50000}), measured with turnperf.
#
# For each N: start the server (fresh, so the baseline is clean), read its VmRSS from
# /proc/PID/status after start, run `turnperf --setup-only --hold S -m N` (Allocate with
# long-term credentials, then ChannelBind, pipelined with a window of 256 transactions),
# read VmRSS again while the allocations are held, stop the server. Prints
#   SCALE label=L allocs=N rss_base_mib=.. rss_mib=.. rss_growth_mib=.. per_alloc_bytes=..
#         setup_allocs_per_s=.. [requested=N0 capped_by=nofile_hard_limit_H]
# setup_allocs_per_s counts authenticated Allocate successes per second, from the first
# request to the last success (turnperf's figure).
#
# File descriptors: each allocation costs one fd in turnperf (its client socket) and one in
# the server (its relay socket), so N allocations need a little more than N fds on each
# side. The script raises the soft limit (`ulimit -n`) to the hard limit, which its children
# inherit. Raising the hard limit needs CAP_SYS_RESOURCE (`prlimit`, `ulimit -Hn`); on the
# development machine this was written on (a container: root, but without
# CAP_SYS_RESOURCE, hard limit 20000) it cannot be raised, so an N that does not fit
# (50000 there) is run at the largest N that does (hard limit - 1000, rounded down to a
# thousand: 19000) and its line says `requested=50000 capped_by=nofile_hard_limit_20000`.
# Where the hard limit allows (or `--raise-hard` succeeds as a privileged root), 50000 runs
# as asked.
#
# Ports: the client sockets live on 127.0.0.2 and 127.0.0.3, ports 2000-31999 (turnperf
# --bind-ip, --client-ports: room for 60000), outside the kernel's ephemeral range
# (32768-60999 here): a server that binds its relay sockets to the wildcard address on
# ephemeral ports (ours) would otherwise share those ~28k ports with the clients and run
# out near 14k allocations (it answers 508 Insufficient Capacity). Such a server still
# needs net.ipv4.ip_local_port_range to hold N ports for N beyond ~28000. coturn gets
# --min-port/--max-port 20000-65000 (10000-65535 beyond 40000 allocations) and user/total
# quotas of 0 (unlimited).
#
# Needs: target/release/turnperf (cargo build --release --features turnperf), ss (iproute2), awk; coturn mode
# needs Debian's coturn (turnserver).
#
# Safety: only loopback addresses (127.0.0.1-3); every wait is bounded; the one server and the one
# turnperf started per N are remembered by PID and only those PIDs are killed.
#
# Examples:
#   bench/turnperf-scale.sh --server coturn
#   bench/turnperf-scale.sh --server cmd --label ours \
#       --cmd "target/release/stunnerd -c file://bench/stunnerd-loopback.yaml"
set -u

usage() {
  cat <<'EOF'
usage: turnperf-scale.sh [--server coturn | --server cmd --cmd "COMMAND"] [options]
  --server coturn        start Debian's turnserver on 127.0.0.1:PORT
  --server cmd --cmd C   start C (via exec, PID tracked); it must serve TURN/UDP on
                         127.0.0.1:PORT with user/pass, realm stunner.l7mp.io
  --coturn-args "ARGS"   extra turnserver arguments
  --port P               TURN port (default 3478)
  --allocs "N1 N2 .."    allocation counts (default "10000 50000"; each 1..200000)
  --hold S               seconds turnperf holds the allocations (default 5)
  --raise-hard           try `ulimit -Hn` to the largest N + 1000 first (needs
                         CAP_SYS_RESOURCE)
  --label NAME           label of the SCALE lines (default: server kind)
  --turnperf PATH        default target/release/turnperf
  --logdir DIR           keep logs here (default: a fresh mktemp dir)
EOF
}

SERVER=coturn; CMD=""; COTURN_ARGS=""; PORT=3478; ALLOCS="10000 50000"; HOLD=5
RAISE_HARD=0; LABEL=""; TURNPERF=""; LOGDIR=""
TUSER=user; TPASS=pass; REALM=stunner.l7mp.io; HOST=127.0.0.1

while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER=$2; shift 2;;
    --cmd) CMD=$2; shift 2;;
    --coturn-args) COTURN_ARGS=$2; shift 2;;
    --port) PORT=$2; shift 2;;
    --allocs) ALLOCS=$2; shift 2;;
    --hold) HOLD=$2; shift 2;;
    --raise-hard) RAISE_HARD=1; shift;;
    --label) LABEL=$2; shift 2;;
    --turnperf) TURNPERF=$2; shift 2;;
    --logdir) LOGDIR=$2; shift 2;;
    -h|--help) usage; exit 0;;
    *) echo "turnperf-scale: unknown argument: $1" >&2; usage >&2; exit 2;;
  esac
done

isnum() { case "$1" in ''|*[!0-9]*) return 1;; *) return 0;; esac; }
isnum "$PORT" || { echo "turnperf-scale: --port must be a number" >&2; exit 2; }
isnum "$HOLD" && [ "$HOLD" -ge 1 ] && [ "$HOLD" -le 120 ] || { echo "turnperf-scale: --hold must be 1..120" >&2; exit 2; }
MAXN=0; COUNT=0
for n in $ALLOCS; do
  isnum "$n" && [ "$n" -ge 1 ] && [ "$n" -le 200000 ] || { echo "turnperf-scale: bad allocation count $n" >&2; exit 2; }
  [ "$n" -gt "$MAXN" ] && MAXN=$n
  COUNT=$((COUNT + 1))
done
[ "$COUNT" -ge 1 ] && [ "$COUNT" -le 8 ] || { echo "turnperf-scale: give 1..8 allocation counts" >&2; exit 2; }
case "$SERVER" in
  coturn) command -v turnserver >/dev/null 2>&1 || { echo "turnperf-scale: missing turnserver (apt-get install -y coturn)" >&2; exit 2; };;
  cmd) [ -n "$CMD" ] || { echo "turnperf-scale: --server cmd needs --cmd" >&2; exit 2; };;
  *) echo "turnperf-scale: --server must be coturn or cmd" >&2; exit 2;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
[ -n "$TURNPERF" ] || TURNPERF=target/release/turnperf
[ -x "$TURNPERF" ] || { echo "turnperf-scale: $TURNPERF not found (cargo build --release --features turnperf)" >&2; exit 2; }
for b in ss awk timeout; do
  command -v "$b" >/dev/null 2>&1 || { echo "turnperf-scale: missing $b" >&2; exit 2; }
done
[ -n "$LABEL" ] || LABEL=$SERVER
[ -n "$LOGDIR" ] || LOGDIR=$(mktemp -d -t turnperf-scale.XXXXXX)
mkdir -p "$LOGDIR" || exit 2

# ---------------------------------------------------------------- fd limits
if [ "$RAISE_HARD" = 1 ]; then
  ulimit -Hn $((MAXN + 1000)) 2>/dev/null \
    || echo "# turnperf-scale: cannot raise the hard fd limit (needs CAP_SYS_RESOURCE)" >&2
fi
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
SOFT=$(ulimit -n)
FIT=$(( (SOFT - 1000) / 1000 * 1000 ))    # the largest N both sides can hold
echo "# turnperf-scale: fd limit $SOFT (hard $HARD): up to $FIT allocations; logs in $LOGDIR" >&2

# ---------------------------------------------------------------- helpers
SRV_PID=""; TP_PID=""
stop_pid() {  # $1 = PID this script started
  local i
  [ -n "$1" ] || return
  kill -TERM "$1" 2>/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do   # at most ~3 s grace
    kill -0 "$1" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
cleanup() { stop_pid "$TP_PID"; TP_PID=""; stop_pid "$SRV_PID"; SRV_PID=""; }
trap cleanup EXIT
trap 'exit 130' INT TERM

udp_bound() { ss -Hlun "sport = :$1" 2>/dev/null | grep -q "127.0.0.1:$1\|\*:$1\|0.0.0.0:$1"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
getv() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2; exit }'; }

start_server() {  # $1 = allocations it must hold
  local n=$1 lo=20000 hi=65000 ready=0
  if udp_bound "$PORT"; then
    echo "turnperf-scale: 127.0.0.1:$PORT is already in use; stop that server or pick --port" >&2
    return 1
  fi
  if [ "$SERVER" = coturn ]; then
    [ "$n" -gt 40000 ] && { lo=10000; hi=65535; }
    local args=(-n --listening-ip=$HOST --relay-ip=$HOST -p "$PORT" --min-port=$lo --max-port=$hi
                --allow-loopback-peers --no-cli --lt-cred-mech --user="$TUSER:$TPASS" --realm="$REALM"
                --user-quota=0 --total-quota=0 --no-dtls --no-tls
                --log-file="$LOGDIR/turnserver-$n.log" --simple-log --no-stdout-log
                --pidfile="$LOGDIR/turnserver.pid" --userdb="$LOGDIR/turndb")
    # shellcheck disable=SC2206
    [ -n "$COTURN_ARGS" ] && args+=($COTURN_ARGS)
    echo "turnserver ${args[*]}" > "$LOGDIR/server-$n.cmd"
    turnserver "${args[@]}" > "$LOGDIR/server-$n.out" 2>&1 &
    SRV_PID=$!
  else
    echo "$CMD" > "$LOGDIR/server-$n.cmd"
    bash -c "exec $CMD" > "$LOGDIR/server-$n.out" 2>&1 &
    SRV_PID=$!
  fi
  for _ in $(seq 1 150); do                   # at most 15 s
    udp_bound "$PORT" && { ready=1; break; }
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ "$ready" = 1 ] || { echo "turnperf-scale: no server on 127.0.0.1:$PORT (see $LOGDIR/server-$n.out)" >&2; return 1; }
  sleep 1                                     # let it settle before the baseline
}

# ---------------------------------------------------------------- runs
for req in $ALLOCS; do
  n=$req; extra=""
  if [ "$n" -gt "$FIT" ]; then
    n=$FIT; extra=" requested=$req capped_by=nofile_hard_limit_$HARD"
  fi
  [ "$n" -ge 1 ] || { echo "SCALE label=$LABEL allocs=$req error=fd_limit_${SOFT}_too_low"; continue; }
  start_server "$n" || { cleanup; echo "SCALE label=$LABEL allocs=$n error=server_start$extra"; continue; }
  rss0=$(rss_kib "$SRV_PID")
  out="$LOGDIR/turnperf-$n.out"
  "$TURNPERF" -u "$TUSER" -w "$TPASS" --server "$HOST:$PORT" -m "$n" \
      --bind-ip 127.0.0.2,127.0.0.3 --client-ports 2000-31999 \
      --setup-only --hold "$HOLD" --setup-timeout 120 > "$out" 2>&1 &
  TP_PID=$!
  res=""
  for _ in $(seq 1 1300); do                  # at most ~130 s: setup timeout + margin
    res=$(grep '^RESULT ' "$out" 2>/dev/null | tail -1)
    [ -n "$res" ] && break
    kill -0 "$TP_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$res" ]; then
    echo "SCALE label=$LABEL allocs=$n error=\"$(tail -1 "$out")\"$extra"
    cleanup; continue
  fi
  sleep 1                                     # the server may still be settling
  rss1=$(rss_kib "$SRV_PID")
  wait "$TP_PID" 2>/dev/null; TP_PID=""       # bounded by --hold and the dealloc bound
  awk -v l="$LABEL" -v n="$n" -v a="${rss0:-0}" -v b="${rss1:-0}" -v rate="$(getv "$res" setup_allocs_per_s)" \
      -v extra="$extra" 'BEGIN {
    printf "SCALE label=%s allocs=%d rss_base_mib=%.1f rss_mib=%.1f rss_growth_mib=%.1f per_alloc_bytes=%.0f setup_allocs_per_s=%s%s\n",
      l, n, a / 1024, b / 1024, (b - a) / 1024, (b - a) * 1024 / n, rate, extra
  }' | tee -a "$LOGDIR/results.txt"
  cleanup
done
exit 0
