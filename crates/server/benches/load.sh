#!/usr/bin/env bash
# Load benchmark of `truststack serve`: decisions per second and latency percentiles with 1 and
# 50 connections, with the durable SQLite ledger on, beside the same server's /healthz as the
# raw-HTTP baseline, in one run. Needs `wrk` (Debian: apt-get install wrk).
#
#   bash crates/server/benches/load.sh [seconds]
#
# TRUSTSTACK_BIN=path runs another build of the binary (e.g. to compare two builds in one session).
# LEDGER_DIR=dir puts the ledger there instead of a temporary directory beside the others, e.g.
# /dev/shm to take the disk out of the figures. The run starts with the sync latency of the disk
# under the ledger, which bounds the latency of every durable decision.
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs="${1:-10}"
source crates/server/benches/common.sh
ledger_dir="$(mktemp -d "${LEDGER_DIR:-$work}/ledger.XXXXXX")"
cleanups+=("rm -rf '$ledger_dir'")
start_server server "$ledger_dir/ledger.db"
port=$server_port

run() { # name connections path [script]
  local out
  if [ -n "${4:-}" ]; then
    out=$(wrk -t1 -c"$2" -d"${secs}s" --latency -s "$4" "http://127.0.0.1:$port$3")
  else
    out=$(wrk -t1 -c"$2" -d"${secs}s" --latency "http://127.0.0.1:$port$3")
  fi
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  printf "%-26s c=%-3s %12s req/s   p50 %-9s p99 %s\n" "$1" "$2" "$rps" "$p50" "$p99"
}

echo "truststack serve load benchmark (${secs}s per run, $(nproc) cores, durable ledger on)"
# What one durable commit costs on this disk at least, idle: 4 KiB written in place, then
# fdatasync. (Under sustained writes the same disk stalls far longer; the decide p99 shows it.)
python3 - "$ledger_dir/sync-probe" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
os.write(fd, b"\0" * (1 << 20)); os.fsync(fd)
lat = []
end = time.monotonic() + 3
while time.monotonic() < end:
    os.pwrite(fd, b"x" * 4096, (len(lat) % 256) * 4096)
    t = time.perf_counter(); os.fdatasync(fd); lat.append(time.perf_counter() - t)
os.close(fd); os.unlink(sys.argv[1])
lat.sort()
print("%-26s %17.0f syncs/s p50 %.3fms   p99 %.3fms" % ("disk sync, idle (floor)", len(lat) / 3,
      lat[len(lat) // 2] * 1e3, lat[len(lat) * 99 // 100] * 1e3))
PY
run "healthz (baseline)" 1 /healthz
run "decide" 1 /v1/decide "$work/decide.lua"
run "healthz (baseline)" 50 /healthz
run "decide" 50 /v1/decide "$work/decide.lua"
entries=$(curl -sf "http://127.0.0.1:$port/v1/ledger/entries?start=0&end=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
echo "ledger entries written: $entries"
