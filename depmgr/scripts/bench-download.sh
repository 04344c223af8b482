#!/usr/bin/env bash
# Download benchmark of the dependency manager: throughput of a 100 MiB
# archive against `cat` of the same file, and depmgr's peak RSS (VmHWM)
# while serving it. See depmgr/examples/bench_download.rs for what is
# measured. Arguments go to the example: --size-mib N --rounds N.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p depmgr --bin depmgr --example bench_download
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "$target_dir/release/examples/bench_download" "$@"
