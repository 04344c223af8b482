#!/usr/bin/env bash
# What idle modules cost the leader: CPU of each supervisor while nothing
# happens, first with the `supctl dev` cluster as it starts (the demo
# module and three agents heartbeating), then after MODULES more modules
# were deployed (pending on a label no node has, as an operator's backlog
# would be), measured the same way in the same run.
#
# Usage (from the workspace root, after
# `cargo build --release --workspace --bins`):
#   bench/idle.sh
# Env: MODULES (44000), SECS (30: each idle measurement), BINS, WORK (as
# bench/write-path.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINS=${BINS:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
MODULES=${MODULES:-44000}
SECS=${SECS:-30}
WORK=${WORK:-$(mktemp -d /tmp/idle.XXXXXX)}
TOKEN=bench-token
mkdir -p "$WORK"

for c in wrk jq curl; do
  command -v "$c" >/dev/null || { echo "installing $c (apt-get)" >&2; apt-get install -y "$c" >/dev/null; }
done
for b in supctl supervisor agent depmgr demo-module; do
  [ -x "$BINS/$b" ] || { echo "$BINS/$b missing: cargo build --release --workspace --bins" >&2; exit 2; }
done

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

SUPERVISOR_ADMIN_TOKEN=$TOKEN "$BINS/supctl" dev --dir "$WORK/dev" >"$WORK/supctl-dev.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1200); do
  grep -q "supervisor cluster running" "$WORK/supctl-dev.log" && break
  sleep 0.1
done
grep -q "supervisor cluster running" "$WORK/supctl-dev.log" || { echo "supctl dev did not start; see $WORK/supctl-dev.log" >&2; exit 1; }
sup() { curl -sk --max-time 5 -H "Authorization: Bearer $TOKEN" "https://$1$2"; }
SUP_LEADER=
for a in $(jq -r '.supervisors[] | "127.0.0.1:\(.)"' "$WORK/dev/cluster.json"); do
  SUP_LEADER=$(sup "$a" /v1/cluster | jq -r '.leader_addr // empty') && [ -n "$SUP_LEADER" ] && break
done
[ -n "$SUP_LEADER" ] || { echo "no supervisor leader" >&2; exit 1; }
SUP_PIDS=$(grep -o "supervisor [0-9]  127.0.0.1:[0-9]*  pid [0-9]*" "$WORK/supctl-dev.log" | awk '{print $3 " " $5}')
LEADER_PID=$(echo "$SUP_PIDS" | awk -v a="$SUP_LEADER" '$1 == a {print $2}')
FOLLOWER_PIDS=$(echo "$SUP_PIDS" | awk -v a="$SUP_LEADER" '$1 != a {print $2}')
HZ=$(getconf CLK_TCK)
cpu_ticks() { # user+system CPU of the given pids, in clock ticks
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
metric() {
  sup "$SUP_LEADER" /metrics | awk -v m="$1" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}
modules() { metric 'supervisor_modules{state="pending"}'; }

# idle <label>: one markdown row of CPU over SECS seconds with no load.
idle() {
  # shellcheck disable=SC2086 # FOLLOWER_PIDS is a list of pids
  local l0 f0 u0 p0 l1 f1 u1 p1
  l0=$(cpu_ticks "$LEADER_PID") f0=$(cpu_ticks $FOLLOWER_PIDS)
  u0=$(metric supervisor_plan_micros_total) p0=$(metric supervisor_control_passes_total)
  sleep "$SECS"
  # shellcheck disable=SC2086
  l1=$(cpu_ticks "$LEADER_PID") f1=$(cpu_ticks $FOLLOWER_PIDS)
  u1=$(metric supervisor_plan_micros_total) p1=$(metric supervisor_control_passes_total)
  awk -v what="$1" -v n="$(modules)" -v hz="$HZ" -v s="$SECS" -v l="$((l1 - l0))" \
    -v f="$((f1 - f0))" -v u="$((u1 - u0))" -v p="$((p1 - p0))" 'BEGIN {
      printf "| %s | %d | %.1f%% | %.1f%% | %.1f ms/s | %.1f |\n",
        what, n, 100 * l / hz / s, 100 * f / hz / s / 2, u / 1000 / s, p / s }'
}

echo "Run of $(date -u +%Y-%m-%dT%H:%MZ), ${SECS} s per measurement, load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| idle, with | pending modules | leader CPU (% of a core) | each follower | leader planning | passes/s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
sleep 5 # the start settles (the demo module deployed and running)
idle "the dev cluster as started (reference)"
# Deploy the backlog, then let it settle before measuring.
while [ "$(modules)" -lt "$MODULES" ]; do
  BENCH_PREFIX="i$(date +%s%N)" BENCH_TOKEN=$TOKEN wrk -t2 -c64 -d3s -s "$ROOT/bench/deploy.lua" \
    "https://$SUP_LEADER" >>"$WORK/wrk.log" 2>&1
done
sleep 5
idle "$MODULES pending modules more"
echo
echo "Logs: $WORK"
