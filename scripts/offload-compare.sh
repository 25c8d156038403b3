#!/usr/bin/env bash
# offload-compare.sh - alternating load runs of several TURN servers with the CPU of
# every process counted, for the eBPF offload (issue 14, BENCHMARKS.md "Kernel offload").
#
# With the offload on, relaying happens in softirq on behalf of whichever process sent
# the datagram (uclient, turnutils_peer) or in ksoftirqd, so the server's own CPU no
# longer tells the truth. Each run here is one turn-bench.sh run (coturn's turnutils
# client and peer, the same recipe for every server); around it this script also reads
# the CPU of every ksoftirqd/N thread (softirq work the kernel deferred). Per delivered
# message it then prints
#   srv_us     the server process (what turn-bench calls srv_us_per_msg)
#   procs_us   server + peer + client + ksoftirqd: the CPU of every process
# Why this counts the kernel's work: on loopback and veth, the softirq that runs the TC
# program is raised by a send and runs when the sender re-enables bottom halves, in the
# sender's context, so its time is in the sender's /proc/PID/stat (which the kernel
# derives from the precise per-task runtime); softirq deferred to ksoftirqd is in the
# ksoftirqd threads' own figures. /proc/stat's busy and softirq columns are NOT used:
# this kernel samples them at the tick (no IRQ_TIME_ACCOUNTING, tickless idle), and with
# 1 ms send intervals they were measured at a quarter of the processes' precise CPU
# (2.6 s against 10.2 s for one coturn load run).
#
# usage: scripts/offload-compare.sh --bench PATH/turn-bench.sh [--rounds N]
#            [--preset load|overload|both] [--servers "coturn ours ours-tc coturn-master"]
#            [--coturn-master PATH/turnserver] [--stunnerd PATH] [--logdir DIR]
#            [--client "PATH/turnutils_uclient [ARGS]"]
#   Servers: coturn         Debian's turnserver as turn-bench.sh starts it
#            coturn-master  PATH/turnserver (coturn master) with --udp-recvmmsg. Not with
#                           --multiplex-peer (nor --udp-gso, which only works with it): it
#                           demultiplexes peers by exact IP:port, so a second allocation
#                           binding a channel to the same peer gets 400, and every uclient
#                           client here talks to the one turnutils_peer.
#            ours           stunnerd -u 1, bench/stunnerd-loopback.yaml (offload None)
#            ours-tc        the same with admin.offload_engine TC on lo
#            ours-xdp       the same with admin.offload_engine XDP on lo (generic mode)
#   --client runs every server with this turnutils_uclient (a wrapper that adds ARGS goes
#   first in PATH), e.g. coturn master's own client, "PATH/turnutils_uclient --no-even-port".
#   Servers run in the given order in odd rounds and reversed in even rounds. Medians
#   of the rounds per preset and server, then ratios against coturn.
# Needs root for the offload. Every process is started by turn-bench.sh, which stops
# them by PID; nothing here runs in the background.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH=""; ROUNDS=3; PRESET=both; SERVERS="coturn ours ours-tc"; MASTER=""
STUNNERD="$ROOT/target/release/stunnerd"; LOGDIR=""; CLIENT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bench) BENCH=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;;
    --preset) PRESET=$2; shift 2;;
    --servers) SERVERS=$2; shift 2;;
    --coturn-master) MASTER=$2; shift 2;;
    --stunnerd) STUNNERD=$2; shift 2;;
    --logdir) LOGDIR=$2; shift 2;;
    --client) CLIENT=$2; shift 2;;
    -h|--help) sed -n 2,38p "$0"; exit 0;;
    *) echo "offload-compare: unknown argument $1" >&2; exit 2;;
  esac
done
[ -n "$BENCH" ] && [ -f "$BENCH" ] || { echo "offload-compare: --bench PATH/turn-bench.sh is required" >&2; exit 2; }
case "$ROUNDS" in ''|*[!0-9]*) echo "offload-compare: --rounds must be 1..10" >&2; exit 2;; esac
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || { echo "offload-compare: --rounds must be 1..10" >&2; exit 2; }
case "$PRESET" in load|overload) PRESETS=("$PRESET");; both) PRESETS=(load overload);; *) echo "offload-compare: bad --preset" >&2; exit 2;; esac
for s in $SERVERS; do
  case "$s" in
    coturn) command -v turnserver >/dev/null || { echo "offload-compare: turnserver missing (scripts/setup.sh)" >&2; exit 2; };;
    coturn-master) [ -x "$MASTER" ] || { echo "offload-compare: coturn-master needs --coturn-master PATH" >&2; exit 2; };;
    ours|ours-tc|ours-xdp) [ -x "$STUNNERD" ] || { echo "offload-compare: build first: cargo build --release" >&2; exit 2; };;
    *) echo "offload-compare: unknown server $s" >&2; exit 2;;
  esac
done
[ -n "$LOGDIR" ] || LOGDIR=$(mktemp -d -t offload-compare.XXXXXX)
mkdir -p "$LOGDIR"
echo "# offload-compare: logs in $LOGDIR" >&2
if [ -n "$CLIENT" ]; then
  mkdir -p "$LOGDIR/client-bin"
  printf '#!/bin/sh\nexec %s "$@"\n' "$CLIENT" > "$LOGDIR/client-bin/turnutils_uclient"
  chmod +x "$LOGDIR/client-bin/turnutils_uclient"
  export PATH="$LOGDIR/client-bin:$PATH"
fi

# The offload config: the benchmark config plus the engine on lo.
sed -e 's/^  healthcheck_endpoint: ""$/  healthcheck_endpoint: ""\n  offload_engine: TC\n  offload_interfaces: [lo]/' \
  "$ROOT/bench/stunnerd-loopback.yaml" > "$LOGDIR/stunnerd-offload.yaml"
grep -q 'offload_engine: TC' "$LOGDIR/stunnerd-offload.yaml" || { echo "offload-compare: could not derive the offload config" >&2; exit 2; }
sed -e 's/offload_engine: TC/offload_engine: XDP/' "$LOGDIR/stunnerd-offload.yaml" > "$LOGDIR/stunnerd-offload-xdp.yaml"

server_args() {   # $1 = server name: prints turn-bench.sh arguments
  case "$1" in
    coturn) printf '%s\n' --label coturn;;
    coturn-master) printf '%s\n' --label coturn-master --server cmd --cmd \
      "$MASTER -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 -p 3478 --min-port=50000 --max-port=50999 --allow-loopback-peers --no-cli --lt-cred-mech --user=user:pass --realm=stunner.l7mp.io --no-dtls --no-tls --no-stdout-log --log-file=$LOGDIR/coturn-master.log --simple-log --udp-recvmmsg";;
    ours) printf '%s\n' --label ours --server cmd --cmd "$STUNNERD -u 1 -c file://$ROOT/bench/stunnerd-loopback.yaml";;
    ours-tc) printf '%s\n' --label ours-tc --server cmd --cmd "$STUNNERD -u 1 -c file://$LOGDIR/stunnerd-offload.yaml";;
    ours-xdp) printf '%s\n' --label ours-xdp --server cmd --cmd "$STUNNERD -u 1 -c file://$LOGDIR/stunnerd-offload-xdp.yaml";;
  esac
}

ksoftirqd_ticks() {   # summed utime+stime of every ksoftirqd thread
  local t=0 f v
  for f in /proc/[0-9]*/stat; do
    v=$(awk '$2 ~ /^\(ksoftirqd\// { sub(/^.*\) /, ""); print $12 + $13 }' "$f" 2>/dev/null)
    [ -n "$v" ] && t=$((t + v))
  done
  echo "$t"
}

for p in "${PRESETS[@]}"; do
  if [ "$p" = load ]; then R=(-m 40 -z 1 -n 15000); else R=(-m 100 -z 1 -n 15000); fi
  for r in $(seq 1 "$ROUNDS"); do
    order=$SERVERS
    [ $((r % 2)) = 0 ] && order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for s in $order; do
      mapfile -t A < <(server_args "$s")
      k0=$(ksoftirqd_ticks)
      line=$(bash "$BENCH" "${A[@]}" "${R[@]}" --logdir "$LOGDIR/$p-$r-$s" 2>/dev/null | grep '^RESULT' | head -1)
      k1=$(ksoftirqd_ticks)
      [ -n "$line" ] || { echo "offload-compare: no result from $s (logs in $LOGDIR/$p-$r-$s)" >&2; continue; }
      echo "$line" | awk -v p="$p" -v s="$s" -v kd=$((k1 - k0)) -v hz="$(getconf CLK_TCK)" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); F[kv[1]] = kv[2] }
        recv = F["recv"] + 0
        procs = (F["srv_cpu_s"] + F["peer_cpu_s"] + F["cli_cpu_s"] + kd / hz)
        printf "RESULT preset=%s server=%s recv=%d loss_pct=%s pps=%s srv_us=%s procs_us=%s ksoftirqd_s=%.2f rc=%s\n",
          p, s, recv, F["loss_pct"], F["pps"], F["srv_us_per_msg"],
          recv ? sprintf("%.2f", procs * 1e6 / recv) : "NA", kd / hz, F["rc"]
      }' | tee -a "$LOGDIR/all.txt"
    done
  done
done

awk '
  function med(list,   n, a, i, j, t) {
    n = split(list, a, " "); if (n == 0) return "NA"
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  {
    delete F
    for (i = 2; i <= NF; i++) { split($i, kv, "="); F[kv[1]] = kv[2] }
    k = F["preset"] SUBSEP F["server"]; P[F["preset"]] = 1; S[F["server"]] = 1
    for (f in F) if (f != "preset" && f != "server" && F[f] != "NA") V[k, f] = V[k, f] " " F[f]
  }
  END {
    n = split("pps loss_pct srv_us procs_us", fs, " ")
    for (p in P) {
      for (s in S) {
        line = sprintf("SUMMARY preset=%s server=%s", p, s)
        for (i = 1; i <= n; i++) { M[p, s, fs[i]] = med(V[p SUBSEP s, fs[i]]); line = line sprintf(" %s=%s", fs[i], M[p, s, fs[i]]) }
        print line
      }
      if (!((p, "coturn", "procs_us") in M)) continue
      for (s in S) if (s != "coturn") {
        line = sprintf("RATIO preset=%s %s/coturn", p, s)
        for (i = 1; i <= n; i++) {
          f = fs[i]; if (f == "loss_pct") continue
          c = M[p, "coturn", f] + 0; o = M[p, s, f]
          line = line sprintf(" %s=%s", f, (c > 0 && o != "NA") ? sprintf("%.3f", o / c) : "NA")
        }
        print line
      }
    }
  }' "$LOGDIR/all.txt"
