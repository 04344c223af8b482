# Shared by the bench scripts (sourced, not run): installing what they
# need, a `supctl dev` cluster of the release binaries and its leader, the
# leader's metrics and the supervisors' CPU. Expects BINS, WORK and TOKEN.

need() { # need <command> <Debian package>
  command -v "$1" >/dev/null && return
  echo "installing $2 (apt-get)" >&2
  apt-get install -y "$2" >/dev/null
}

need_bins() {
  local b
  for b in supctl supervisor agent depmgr demo-module; do
    [ -x "$BINS/$b" ] || { echo "$BINS/$b missing: cargo build --release --workspace --bins" >&2; exit 2; }
  done
}

# Processes started here, stopped on exit (TERM, then KILL after 10 s).
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

sup() { curl -sk --max-time 5 -H "Authorization: Bearer $TOKEN" "https://$1$2"; }

# start_dev: `supctl dev` in $WORK/dev with the admin token; sets
# SUP_LEADER (host:port), LEADER_PID and FOLLOWER_PIDS (from the lines
# `supctl dev` prints: "supervisor N  127.0.0.1:PORT  pid P  (role)").
start_dev() {
  SUPERVISOR_ADMIN_TOKEN=$TOKEN "$BINS/supctl" dev --dir "$WORK/dev" >"$WORK/supctl-dev.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1200); do
    grep -q "supervisor cluster running" "$WORK/supctl-dev.log" && break
    sleep 0.1
  done
  grep -q "supervisor cluster running" "$WORK/supctl-dev.log" || { echo "supctl dev did not start; see $WORK/supctl-dev.log" >&2; exit 1; }
  SUP_LEADER=
  local a
  for a in $(jq -r '.supervisors[] | "127.0.0.1:\(.)"' "$WORK/dev/cluster.json"); do
    SUP_LEADER=$(sup "$a" /v1/cluster | jq -r '.leader_addr // empty') && [ -n "$SUP_LEADER" ] && break
  done
  [ -n "$SUP_LEADER" ] || { echo "no supervisor leader" >&2; exit 1; }
  local pids
  pids=$(grep -o "supervisor [0-9]  127.0.0.1:[0-9]*  pid [0-9]*" "$WORK/supctl-dev.log" | awk '{print $3 " " $5}')
  LEADER_PID=$(echo "$pids" | awk -v a="$SUP_LEADER" '$1 == a {print $2}')
  FOLLOWER_PIDS=$(echo "$pids" | awk -v a="$SUP_LEADER" '$1 != a {print $2}')
}

HZ=$(getconf CLK_TCK)
cpu_ticks() { # cpu_ticks <pid>...: user+system CPU of those processes, in clock ticks
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

metric() { # metric <name or name{labels}>: its value on the leader (0 when absent)
  sup "$SUP_LEADER" /metrics | awk -v m="$1" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}
modules() { metric 'supervisor_modules{state="pending"}'; }
rss_mb() { # rss_mb <pid>: resident memory in MB (VmRSS), 0 when gone
  awk '/^VmRSS:/ {printf "%d", $2 / 1024; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}
