#!/usr/bin/env bash
# The write path, side by side with etcd, in one run.
#
# Starts a 3-member etcd 3.4 cluster (Debian's `etcd-server`, fsync on, as
# packaged) and a `supctl dev` cluster (3 supervisors, depmgr, 3 agents,
# mutual TLS, every default), both on loopback, then at each connection
# count runs `wrk` for SECS seconds against each, interleaved (the order
# alternates from one count to the next):
#   - supervisor: POST /v1/modules to the leader, each a new module on a
#     label no node has (it stays pending), with the admin token (wrk
#     cannot present a client certificate);
#   - etcd: PUT of a new key through the v3 JSON gateway of the leader,
#     a value of 120 bytes.
# Then the growth check: deploys at 64 connections in SECS-second
# segments until the state holds GROW_TO modules, one line per segment.
# Prints markdown tables (and writes them to $WORK/results.md).
#
# Why a shell script: wrk and etcd are outside programs, and the figures
# must come from the very binaries `supctl dev` runs, driven the way the
# issue measured them. The leader-failover figures come from the Rust
# harness `tests/examples/failover.rs` (it needs to kill and restart
# replicas and poll every agent every 5 ms).
#
# Usage (from the workspace root, after
# `cargo build --release --workspace --bins`):
#   bench/write-path.sh
# Env: SECS (10), CONNS ("1 16 64 256"; empty: growth only), GROW_TO (250000), IDLE_SECS (5:
# the idle planning cost measured at the end), BINS (the
# directory of the release binaries; default $CARGO_TARGET_DIR/release or
# target/release), WORK (a scratch dir; default a new one under /tmp).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
BINS=${BINS:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
SECS=${SECS:-10}
CONNS=${CONNS-"1 16 64 256"}
GROW_TO=${GROW_TO:-250000}
WORK=${WORK:-$(mktemp -d /tmp/write-path.XXXXXX)}
TOKEN=bench-token
mkdir -p "$WORK"

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
need etcd etcd-server
need etcdctl etcd-client
need wrk wrk
need jq jq
need_bins

# --- etcd: 3 members ---------------------------------------------------------
ETCD_CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    --log-level warn >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!)
done
ENDPOINTS=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
ETCD_LEADER=
for _ in $(seq 300); do
  ETCD_LEADER=$(ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINTS --command-timeout=1s endpoint status -w json 2>/dev/null |
    jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' 2>/dev/null | head -1) || true
  [ -n "$ETCD_LEADER" ] && break
  sleep 0.1
done
[ -n "$ETCD_LEADER" ] || { echo "etcd elected no leader; see $WORK/etcd*.log" >&2; exit 1; }
echo "etcd $(etcd --version | head -1 | awk '{print $3}'): leader $ETCD_LEADER" >&2

# --- the supervisor cluster: supctl dev --------------------------------------
start_dev
echo "supervisor leader $SUP_LEADER" >&2

term() { metric supervisor_term; }

# wrk's figures: "<requests/s> <p99 ms> <non-2xx> <socket errors>"
run_wrk() { # run_wrk <conns> <lua> <url> <prefix>
  local c=$1 threads=2
  [ "$c" -lt 2 ] && threads=1
  local out
  out=$(BENCH_PREFIX=$4 BENCH_TOKEN=$TOKEN wrk -t"$threads" -c"$c" -d"${SECS}s" --timeout 10s \
    --latency -s "$2" "$3" 2>&1)
  echo "$out" >>"$WORK/wrk.log"
  echo "$out" | awk '
    /Requests\/sec:/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); p=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); p=v} else if (v ~ /s$/) {sub(/s$/,"",v); p=v*1000}}
    /Non-2xx/ {bad=$NF}
    /Socket errors/ {err=$0}
    END {gsub(/,/,"",err); printf "%s %.1f %d %s\n", rps, p, bad, (err=="" ? "none" : "yes")}'
}

# Same-run references for one connection: the disk's raw fdatasync rate
# (128-byte writes into a preallocated file in $WORK, the pattern of a WAL
# sync) and each server's bare request rate (one connection: the supervisor's GET /health, etcd's GET /version; etcd's /health is a quorum read).
raw_fsync() {
  python3 - "$WORK/fsync-probe" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600)
os.posix_fallocate(fd, 0, 64 << 20)
os.fsync(fd)
n, end, buf = 0, time.monotonic() + 3, b"x" * 128
while time.monotonic() < end:
    os.pwrite(fd, buf, (n * 128) % (64 << 20))
    os.fdatasync(fd)
    n += 1
os.close(fd)
os.unlink(sys.argv[1])
print(round(n / 3))
PY
}
RAW_FSYNC=$(raw_fsync)
read -r SUP_HEALTH _ <<<"$(run_wrk 1 /dev/null "https://$SUP_LEADER/health" h)"
read -r ETCD_HEALTH _ <<<"$(run_wrk 1 /dev/null "$ETCD_LEADER/version" eh)"

RESULTS=$WORK/results.md
{
  echo "Run of $(date -u +%Y-%m-%dT%H:%MZ), ${SECS} s per point, load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  printf "References in this run: raw fdatasync %s/s on this disk; one connection, bare requests: supervisor GET /health (HTTPS) %.0f/s, etcd GET /version (HTTP) %.0f/s.\n" \
    "$RAW_FSYNC" "$SUP_HEALTH" "$ETCD_HEALTH"
  echo
  echo "| connections | supervisor deploys/s | etcd puts/s | ratio | supervisor p99 | etcd p99 | modules before |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} | tee "$RESULTS"

term_start=$(term)
prop_start=$(metric supervisor_proposals_total)
ent_start=$(metric supervisor_proposal_entries_total)
i=0
for c in $CONNS; do
  i=$((i + 1))
  before=$(modules)
  if [ $((i % 2)) -eq 1 ]; then
    e=$(run_wrk "$c" "$BENCH/put.lua" "$ETCD_LEADER" "e$c")
    s=$(run_wrk "$c" "$BENCH/deploy.lua" "https://$SUP_LEADER" "s$c")
  else
    s=$(run_wrk "$c" "$BENCH/deploy.lua" "https://$SUP_LEADER" "s$c")
    e=$(run_wrk "$c" "$BENCH/put.lua" "$ETCD_LEADER" "e$c")
  fi
  read -r s_rps s_p99 s_bad s_err <<<"$s"
  read -r e_rps e_p99 e_bad e_err <<<"$e"
  ratio=$(awk -v a="$s_rps" -v b="$e_rps" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  note=""
  [ "$s_bad" != 0 ] && note="$note (supervisor non-2xx: $s_bad)"
  [ "$e_bad" != 0 ] && note="$note (etcd non-2xx: $e_bad)"
  [ "$s_err" != none ] && note="$note (supervisor socket errors)"
  [ "$e_err" != none ] && note="$note (etcd socket errors)"
  printf "| %s | %.0f | %.0f | %s | %s ms | %s ms | %s |%s\n" \
    "$c" "$s_rps" "$e_rps" "$ratio" "$s_p99" "$e_p99" "$before" "$note" | tee -a "$RESULTS"
done
prop_end=$(metric supervisor_proposals_total)
ent_end=$(metric supervisor_proposal_entries_total)
{
  echo
  echo "Batching on the leader during the table: $((prop_end - prop_start)) proposals in $((ent_end - ent_start)) log entries; package checks: $(metric supervisor_package_checks_cached_total) from the cache, $(metric supervisor_package_checks_asked_total) asked depmgr; Raft term $term_start -> $(term)."
  echo
  echo "Growth: 64 connections, ${SECS} s segments, until $GROW_TO modules."
  echo
  echo "Per segment: the leader's CPU and the two followers' (in cores, from"
  echo "/proc), the leader's planning (ms per second) and deploys per log entry."
  echo
  echo "| segment | modules before | deploys/s | p99 | leader CPU | followers CPU | planning | deploys per entry |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} | tee -a "$RESULTS"
seg=0
while :; do
  before=$(modules)
  [ "$before" -ge "$GROW_TO" ] && break
  seg=$((seg + 1))
  [ "$seg" -gt 30 ] && break
  # shellcheck disable=SC2086 # FOLLOWER_PIDS is a list of pids
  l0=$(cpu_ticks $LEADER_PID) f0=$(cpu_ticks $FOLLOWER_PIDS) u0=$(metric supervisor_plan_micros_total)
  p0=$(metric supervisor_proposals_total) n0=$(metric supervisor_proposal_entries_total) t0=$(date +%s%N)
  read -r g_rps g_p99 g_bad _ <<<"$(run_wrk 64 "$BENCH/deploy.lua" "https://$SUP_LEADER" "g$seg")"
  # shellcheck disable=SC2086
  l1=$(cpu_ticks $LEADER_PID) f1=$(cpu_ticks $FOLLOWER_PIDS) u1=$(metric supervisor_plan_micros_total)
  p1=$(metric supervisor_proposals_total) n1=$(metric supervisor_proposal_entries_total) t1=$(date +%s%N)
  note=""
  [ "$g_bad" != 0 ] && note=" (non-2xx: $g_bad)"
  awk -v seg="$seg" -v before="$before" -v rps="$g_rps" -v p99="$g_p99" -v note="$note" -v hz="$HZ" \
    -v l="$((l1 - l0))" -v f="$((f1 - f0))" -v u="$((u1 - u0))" -v p="$((p1 - p0))" -v n="$((n1 - n0))" \
    -v ns="$((t1 - t0))" 'BEGIN {
      s = ns / 1e9
      printf "| %d | %s | %.0f | %s ms | %.2f | %.2f | %.0f ms/s | %.1f |%s\n",
        seg, before, rps, p99, l / hz / s, f / hz / s, u / 1000 / s, (n > 0 ? p / n : 0), note }' | tee -a "$RESULTS"
done
# The leader's planning cost with every module in the state and no load:
# what each control pass spends planning, over IDLE_SECS seconds.
IDLE_SECS=${IDLE_SECS:-5}
p0=$(metric supervisor_control_passes_total)
u0=$(metric supervisor_plan_micros_total)
sleep "$IDLE_SECS"
p1=$(metric supervisor_control_passes_total)
u1=$(metric supervisor_plan_micros_total)
{
  echo
  awk -v p="$((p1 - p0))" -v u="$((u1 - u0))" -v s="$IDLE_SECS" 'BEGIN {
    printf "Idle for %d s afterwards: %d control passes, %.1f ms planning per pass on average, %.0f ms of planning per second.\n",
      s, p, (p > 0 ? u / p / 1000 : 0), u / s / 1000 }'
  echo
  # Snapshots built during the run, by every supervisor (apply waits on a
  # replica while its state is encoded).
  snaps=$(cat "$WORK"/dev/logs/*.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep "snapshot built" || true)
  if [ -z "$snaps" ]; then
    echo "Snapshots built: none."
  else
    last=$(echo "$snaps" | tail -1 | grep -o 'bytes=[0-9]*' | cut -d= -f2)
    stat() { # stat <field>: "<median> <max>" of a field of those lines
      echo "$snaps" | grep -o "$1=[0-9]*" | cut -d= -f2 | sort -n |
        awk '{ e[NR] = $1 } END { printf "%d %d", e[int((NR + 1) / 2)], e[NR] }'
    }
    read -r c_med c_max <<<"$(stat copy_ms)"
    read -r e_med e_max <<<"$(stat encode_ms)"
    printf "Snapshots built (all supervisors): %d; apply waited for the copy %d ms at the median and %d ms at most; the encoding beside it took %d ms at the median and %d ms at most; the last was %.1f MB.\n" \
      "$(echo "$snaps" | wc -l)" "$c_med" "$c_max" "$e_med" "$e_max" "$(awk -v b="$last" 'BEGIN {print b / 1e6}')"
  fi
  echo
  # shellcheck disable=SC2086 # FOLLOWER_PIDS is a list of pids
  echo "Resident memory at the end: leader $(rss_mb "$LEADER_PID") MB; followers $(for p in $FOLLOWER_PIDS; do printf "%s MB " "$(rss_mb "$p")"; done)"
  echo
  echo "Modules at the end: $(modules); Raft term at the end: $(term). Logs and wrk output: $WORK"
} | tee -a "$RESULTS"
