#!/bin/sh
# Writes what the module sees to $OUT, then idles.
{
  env | grep '^MODULE_' | sort
  echo "GREETING=$GREETING"
  echo "PWD=$(pwd)"
  echo "ARGS=$*"
  echo "BASE=$(cat "$MODULE_PACKAGES_DIR/base-1.0.0/share/greeting.txt")"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
exec sleep 100000
