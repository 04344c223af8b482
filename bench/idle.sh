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

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need wrk wrk
need jq jq
need curl curl
need_bins

start_dev

# settle: waits until nothing commits (the leader's last applied index
# holds for a second), at most 60 s.
settle() {
  local before now
  before=$(metric supervisor_last_applied)
  for _ in $(seq 60); do
    sleep 1
    now=$(metric supervisor_last_applied)
    [ "$now" = "$before" ] && return
    before=$now
  done
  echo "the cluster did not settle within 60 s" >&2
  exit 1
}

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
settle
idle "the dev cluster as started (reference)"
# Deploy the backlog; measure once nothing commits any more.
while [ "$(modules)" -lt "$MODULES" ]; do
  BENCH_PREFIX="i$(date +%s%N)" BENCH_TOKEN=$TOKEN wrk -t2 -c64 -d3s -s "$ROOT/bench/deploy.lua" \
    "https://$SUP_LEADER" >>"$WORK/wrk.log" 2>&1
done
settle
idle "$MODULES pending modules more"
echo
echo "Logs: $WORK"
