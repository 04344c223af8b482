#!/bin/sh
# Leaves a grandchild in a session (and process group) of its own that
# ignores SIGTERM, records its pid in $OUT, waits.
setsid sh -c 'trap "" TERM; exec sleep 100000' &
echo $! > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
wait
