#!/bin/sh
# Leaves a grandchild that ignores SIGTERM, records its pid in $OUT, waits.
sh -c 'trap "" TERM; exec sleep 100000' &
echo $! > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
wait
