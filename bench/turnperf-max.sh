#!/usr/bin/env bash
# turnperf-max.sh - the highest relayed msg/s a TURN server sustains at <= 0.1% loss, with
# the server pinned to one core and the load generator (turnperf) to the other.
#
# Starts the server (coturn's turnserver, or any command) on 127.0.0.1 under
# `taskset -c 0`, then runs `taskset -c 1 turnperf` in short steps (default -m 100
# allocations, 5 s measured after 1 s warmup) at increasing offered load: x1.5 per step
# while the step passes, then bisection between the last pass and the first failure. A
# step passes if loss <= --loss (default 0.1%) and the client actually offered >= 97% of
# the target (otherwise the client, not the server, is the limit: the run stops and says
# client_limited=1). After a failing step the server is restarted (an overloaded server
# can carry its backlog into the next step), and every start is followed by a short
# unreported warm-up run.
#
# Output: one STEP line per step, then
#   MAX label=L pps=P offered_pps=O loss_pct=X rtt_p99_us=.. srv_cpu_pct=.. others_cpu_pct=..
#       steps=N client_limited=0|1
# pps is delivered messages/s back at the clients (each message crosses the relay twice:
# client->peer and peer->client, or client->client with -y).
#
# Needs: target/release/turnperf (cargo build --release --features turnperf), taskset (util-linux), ss
# (iproute2), awk; `--server coturn` needs Debian's coturn (turnserver).
#
# Safety: only 127.0.0.1; every loop is bounded in count and time (at most --steps steps,
# each under a hard timeout, and no new step after 270 s: the whole run stays under
# 5 minutes); the one server this script starts is remembered by PID and only that PID is
# killed at exit.
#
# Examples (same machine, same client, one after the other):
#   bench/turnperf-max.sh --server coturn
#   bench/turnperf-max.sh --server cmd --label ours \
#       --cmd "target/release/stunnerd -c file://bench/stunnerd-loopback.yaml"
#   bench/turnperf-max.sh --server coturn -y        # client-to-client, no peer
set -u

usage() {
  cat <<'EOF'
usage: turnperf-max.sh [--server coturn | --server cmd --cmd "COMMAND"] [options]
  --server coturn        start Debian's turnserver on 127.0.0.1:PORT (as turn-bench.sh does)
  --server cmd --cmd C   start C (via exec, PID tracked); it must serve TURN/UDP on
                         127.0.0.1:PORT, user/pass, realm stunner.l7mp.io, loopback peers
  --coturn-args "ARGS"   extra turnserver arguments (e.g. --relay-threads=1)
  --port P               TURN port (default 3478)
  --relay-range A-B      coturn relay ports (default 20000-29999)
  --label NAME           label of the MAX line (default: server kind)
  -m N                   allocations (default 100)
  -l B                   payload bytes (default 100)
  -s                     Send indications instead of ChannelData
  -y                     client-to-client (turnperf -y): no peer, half the client work
  --start PPS            first offered load, total msg/s (default 20000)
  --max-pps PPS          stop ramping here (default 400000)
  --dur S                measured seconds per step (default 5)
  --loss PCT             pass threshold (default 0.1)
  --steps N              at most N steps (default 12, max 20)
  --no-pin               do not pin (machines with one core)
  --turnperf PATH        default target/release/turnperf
  --logdir DIR           keep logs here (default: a fresh mktemp dir)
EOF
}

SERVER=coturn; CMD=""; COTURN_ARGS=""; PORT=3478; RELAY_RANGE=20000-29999; LABEL=""
M=100; L=100; SEND=0; C2C=0; START=20000; MAXPPS=400000; DUR=5; LOSS=0.1; STEPS=12
PIN=1; TURNPERF=""; LOGDIR=""
TUSER=user; TPASS=pass; REALM=stunner.l7mp.io; HOST=127.0.0.1

while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER=$2; shift 2;;
    --cmd) CMD=$2; shift 2;;
    --coturn-args) COTURN_ARGS=$2; shift 2;;
    --port) PORT=$2; shift 2;;
    --relay-range) RELAY_RANGE=$2; shift 2;;
    --label) LABEL=$2; shift 2;;
    -m) M=$2; shift 2;;
    -l) L=$2; shift 2;;
    -s) SEND=1; shift;;
    -y) C2C=1; shift;;
    --start) START=$2; shift 2;;
    --max-pps) MAXPPS=$2; shift 2;;
    --dur) DUR=$2; shift 2;;
    --loss) LOSS=$2; shift 2;;
    --steps) STEPS=$2; shift 2;;
    --no-pin) PIN=0; shift;;
    --turnperf) TURNPERF=$2; shift 2;;
    --logdir) LOGDIR=$2; shift 2;;
    -h|--help) usage; exit 0;;
    *) echo "turnperf-max: unknown argument: $1" >&2; usage >&2; exit 2;;
  esac
done

isnum() { case "$1" in ''|*[!0-9]*) return 1;; *) return 0;; esac; }
for v in PORT M L START MAXPPS DUR STEPS; do
  isnum "${!v}" || { echo "turnperf-max: $v must be a non-negative integer" >&2; exit 2; }
done
[ "$STEPS" -ge 1 ] && [ "$STEPS" -le 20 ] || { echo "turnperf-max: --steps must be 1..20" >&2; exit 2; }
[ "$DUR" -ge 1 ] && [ "$DUR" -le 30 ] || { echo "turnperf-max: --dur must be 1..30" >&2; exit 2; }
[ "$M" -ge 1 ] && [ "$M" -le 5000 ] || { echo "turnperf-max: -m must be 1..5000" >&2; exit 2; }
[ "$START" -ge 100 ] || { echo "turnperf-max: --start must be >= 100" >&2; exit 2; }
case "$SERVER" in
  coturn) command -v turnserver >/dev/null 2>&1 || { echo "turnperf-max: missing turnserver (apt-get install -y coturn)" >&2; exit 2; };;
  cmd) [ -n "$CMD" ] || { echo "turnperf-max: --server cmd needs --cmd" >&2; exit 2; };;
  *) echo "turnperf-max: --server must be coturn or cmd" >&2; exit 2;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
[ -n "$TURNPERF" ] || TURNPERF=target/release/turnperf
[ -x "$TURNPERF" ] || { echo "turnperf-max: $TURNPERF not found (cargo build --release --features turnperf)" >&2; exit 2; }
for b in ss awk timeout taskset; do
  command -v "$b" >/dev/null 2>&1 || { echo "turnperf-max: missing $b" >&2; exit 2; }
done
NCPU=$(nproc 2>/dev/null || echo 1)
if [ "$PIN" = 1 ] && [ "$NCPU" -lt 2 ]; then
  echo "turnperf-max: fewer than 2 CPUs; use --no-pin" >&2; exit 2
fi
SRV_PIN=(); CLI_PIN=()
[ "$PIN" = 1 ] && { SRV_PIN=(taskset -c 0); CLI_PIN=(taskset -c 1); }
[ -n "$LABEL" ] || LABEL=$SERVER
[ -n "$LOGDIR" ] || LOGDIR=$(mktemp -d -t turnperf-max.XXXXXX)
mkdir -p "$LOGDIR" || exit 2
T_START=$(date +%s)

# ---------------------------------------------------------------- cleanup
SRV_PID=""
cleanup() {
  local i
  [ -n "$SRV_PID" ] || return
  kill -TERM "$SRV_PID" 2>/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10; do          # at most ~2 s grace
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$SRV_PID" 2>/dev/null
  wait "$SRV_PID" 2>/dev/null
  SRV_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

udp_bound() { ss -Hlun "sport = :$1" 2>/dev/null | grep -q "127.0.0.1:$1\|\*:$1\|0.0.0.0:$1"; }
cpu_ticks() { # utime+stime of a PID (all threads)
  [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# Busy ticks of all CPUs outside (soft)irq context: user nice system steal. A step's
# others_cpu_pct = that, minus the server's and turnperf's own CPU time: other processes
# on the machine (a compile, another benchmark), which make the step's figures unreliable.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $9; exit }' /proc/stat 2>/dev/null || echo 0; }
kids_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' /proc/$$/stat 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- server
if udp_bound "$PORT"; then
  echo "turnperf-max: 127.0.0.1:$PORT is already in use; stop that server or pick --port" >&2
  exit 3
fi
CARGS=(-n --listening-ip=$HOST --relay-ip=$HOST -p "$PORT"
       --min-port="${RELAY_RANGE%-*}" --max-port="${RELAY_RANGE#*-}"
       --allow-loopback-peers --no-cli --lt-cred-mech --user="$TUSER:$TPASS" --realm="$REALM"
       --no-dtls --no-tls --log-file="$LOGDIR/turnserver.log" --simple-log --no-stdout-log
       --pidfile="$LOGDIR/turnserver.pid" --userdb="$LOGDIR/turndb")
# shellcheck disable=SC2206
[ -n "$COTURN_ARGS" ] && CARGS+=($COTURN_ARGS)
if [ "$SERVER" = coturn ]; then
  echo "${SRV_PIN[*]} turnserver ${CARGS[*]}" > "$LOGDIR/server.cmd"
else
  echo "${SRV_PIN[*]} $CMD" > "$LOGDIR/server.cmd"
fi

start_server() {
  local ready=0
  for _ in $(seq 1 50); do                  # the previous instance's port: at most 5 s
    udp_bound "$PORT" || break
    sleep 0.1
  done
  if [ "$SERVER" = coturn ]; then
    "${SRV_PIN[@]}" turnserver "${CARGS[@]}" >> "$LOGDIR/server.out" 2>&1 &
  else
    "${SRV_PIN[@]}" bash -c "exec $CMD" >> "$LOGDIR/server.out" 2>&1 &
  fi
  SRV_PID=$!
  for _ in $(seq 1 150); do                 # at most 15 s
    udp_bound "$PORT" && { ready=1; break; }
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ "$ready" = 1 ] || { echo "turnperf-max: no server on 127.0.0.1:$PORT (see $LOGDIR/server.out)" >&2; return 1; }
  sleep 0.5                                 # let every server thread come up
  # Warm it up (the first packets after a start are slower); not reported.
  timeout -k 3 30 "${CLI_PIN[@]}" "$TURNPERF" "${TARGS[@]}" -r 100 -d 1 >> "$LOGDIR/turnperf.log" 2>&1
  return 0
}

# ---------------------------------------------------------------- steps
TARGS=(-u "$TUSER" -w "$TPASS" --server "$HOST:$PORT" -m "$M" -l "$L" --warmup 1)
[ "$SEND" = 1 ] && TARGS+=(-s)
[ "$C2C" = 1 ] && TARGS+=(-y)
MODE=channel; [ "$SEND" = 1 ] && MODE=send; [ "$C2C" = 1 ] && MODE="$MODE+c2c"
echo "# turnperf-max: label=$LABEL mode=$MODE allocs=$M size=$L logs in $LOGDIR" >&2

getv() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2; exit }'; }

# run_step OFFERED -> sets S_PASS (1/0), S_PPS, S_LINE, S_CLIENT (1 if client-bound)
STEP=0
run_step() {
  local offered=$1 rate out rc s0 s1 t0 t1 b0 b1 k0 k1 res sent loss pps srv others
  STEP=$((STEP + 1))
  rate=$(awk -v o="$offered" -v m="$M" 'BEGIN { printf "%.3f", o / m }')
  s0=$(cpu_ticks "$SRV_PID"); t0=$(date +%s.%N); b0=$(busy_ticks); k0=$(kids_ticks)
  out=$(timeout -k 3 $((DUR + 40)) "${CLI_PIN[@]}" "$TURNPERF" "${TARGS[@]}" -r "$rate" -d "$DUR" 2>&1)
  rc=$?
  s1=$(cpu_ticks "$SRV_PID"); t1=$(date +%s.%N); b1=$(busy_ticks); k1=$(kids_ticks)
  echo "$out" | tr -d '\000' >> "$LOGDIR/turnperf.log"
  res=$(echo "$out" | grep '^RESULT ' | tail -1)
  S_PASS=0; S_PPS=0; S_CLIENT=0
  if [ -z "$res" ]; then
    S_LINE="STEP n=$STEP offered_pps=$offered rc=$rc error=\"$(echo "$out" | tr -d '\000' | tail -1)\" pass=0"
    return 0
  fi
  sent=$(getv "$res" sent); loss=$(getv "$res" loss_pct); pps=$(getv "$res" pps)
  srv=$(awk -v a="$s0" -v b="$s1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.0f", (b - a) / hz * 100 / (t1 - t0) }')
  others=$(awk -v b="$((b1 - b0))" -v s="$((s1 - s0))" -v k="$((k1 - k0))" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    'BEGIN { o = (b - s - k) / hz * 100 / (t1 - t0); printf "%.0f", (o < 0) ? 0 : o }')
  S_PPS=$pps
  S_PASS=$(awk -v l="$loss" -v max="$LOSS" 'BEGIN { print (l <= max) ? 1 : 0 }')
  # Did the client offer what was asked? If not, it is the bottleneck.
  S_CLIENT=$(awk -v s="$sent" -v o="$offered" -v d="$DUR" 'BEGIN { print (s < 0.97 * o * d) ? 1 : 0 }')
  [ "$S_CLIENT" = 1 ] && S_PASS=0
  S_LINE="STEP n=$STEP offered_pps=$offered pps=$pps loss_pct=$loss rtt_p50_us=$(getv "$res" rtt_p50_us) rtt_p99_us=$(getv "$res" rtt_p99_us) srv_cpu_pct=$srv cli_cpu_pct=$(getv "$res" cli_cpu_pct) others_cpu_pct=$others client_limited=$S_CLIENT pass=$S_PASS"
  return 0
}

time_left() { [ $(( $(date +%s) - T_START )) -lt 270 ]; }

# A server that failed a step may carry its backlog (queues, half-released allocations)
# into the next one: restart it after every failing step, so each step starts clean.
restart_server() { cleanup; start_server || exit 3; }

start_server || exit 3

BEST=0; BEST_OFF=0; BEST_LINE=""; LO=0; HI=0; CLIENT_LIMITED=0
offered=$START
# Ramp: x1.5 while passing.
while [ "$STEP" -lt "$STEPS" ] && time_left; do
  run_step "$offered"; echo "$S_LINE"
  if [ "$S_PASS" = 1 ]; then
    LO=$offered
    if awk -v a="$S_PPS" -v b="$BEST" 'BEGIN { exit !(a > b) }'; then BEST=$S_PPS; BEST_OFF=$offered; BEST_LINE=$S_LINE; fi
    next=$(( offered * 3 / 2 ))
    [ "$next" -gt "$MAXPPS" ] && break
    offered=$next
  else
    HI=$offered
    [ "$S_CLIENT" = 1 ] && CLIENT_LIMITED=1
    restart_server
    break
  fi
done
# Bisect between the last pass and the first failure, to within 5%.
if [ "$HI" -gt 0 ] && [ "$CLIENT_LIMITED" = 0 ]; then
  [ "$LO" -gt 0 ] || LO=$(( START / 4 ))
  while [ "$STEP" -lt "$STEPS" ] && time_left && [ $(( (HI - LO) * 20 )) -gt "$HI" ]; do
    mid=$(( (LO + HI) / 2 ))
    run_step "$mid"; echo "$S_LINE"
    if [ "$S_PASS" = 1 ]; then
      LO=$mid
      if awk -v a="$S_PPS" -v b="$BEST" 'BEGIN { exit !(a > b) }'; then BEST=$S_PPS; BEST_OFF=$mid; BEST_LINE=$S_LINE; fi
    else
      HI=$mid
      [ "$S_CLIENT" = 1 ] && { CLIENT_LIMITED=1; break; }
      restart_server
    fi
  done
fi
echo "MAX label=$LABEL mode=$MODE allocs=$M size=$L pps=$BEST offered_pps=$BEST_OFF loss_pct=$(getv "$BEST_LINE" loss_pct) rtt_p99_us=$(getv "$BEST_LINE" rtt_p99_us) srv_cpu_pct=$(getv "$BEST_LINE" srv_cpu_pct) others_cpu_pct=$(getv "$BEST_LINE" others_cpu_pct) steps=$STEP client_limited=$CLIENT_LIMITED" | tee -a "$LOGDIR/results.txt"
exit 0
