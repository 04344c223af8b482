#!/bin/sh
# Leaves a grandchild in a session of its own, with an empty environment
# (nothing says it belongs to a module), that ignores SIGTERM; records its
# pid in $OUT, waits.
env -i setsid /bin/sh -c 'trap "" TERM; exec /bin/sleep 100000' &
echo $! > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
wait
