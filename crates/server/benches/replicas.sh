#!/usr/bin/env bash
# Replicas benchmark of `truststack serve`: decisions per second and p50/p99 at 50 connections
# for 1 replica on SQLite (the baseline), then 1, 2 and 3 replicas on one PostgreSQL database,
# in one run; per decision, the CPU of the servers and of the database and the requests sent
# to the database; inclusion-proof latency and checkpoint lag under the load. Needs `wrk`
# (Debian: apt-get install wrk), `psql` and `ss`.
#
#   bash crates/server/benches/replicas.sh [seconds]
#
# PG_ADMIN=postgres://USER@HOST:PORT/DATABASE names a database where this user may create and
# drop databases (default: postgres://postgres@127.0.0.1:5432/test); each PostgreSQL
# configuration gets a fresh database, dropped after it. TRUSTSTACK_BIN=path runs another build.
# crates/server/benches/replicas.py says what is measured and how.
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs="${1:-10}"
admin="${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}"
command -v psql >/dev/null || { echo "psql is required: apt-get install postgresql-client" >&2; exit 1; }
psql "$admin" -Xqc 'SELECT 1' >/dev/null
source crates/server/benches/common.sh

windows=0
measure() { # label ledger PORT:PID...
  windows=$((windows + 1))
  python3 crates/server/benches/replicas.py measure --secs "$secs" --lua "$work/decide.lua" \
    --label "$1" --store "$2" --out "$work/window.$windows.json" "${@:3}"
}

echo "truststack serve replicas benchmark (${secs}s per configuration, 50 connections," \
  "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"

start_server sqlite "$work/ledger.db"
measure "1 replica, SQLite" "$work/ledger.db" "$server_port:$server_pid"
stop_servers

base="${admin%%\?*}"
params="${admin#"$base"}"
for replicas in 1 2 3; do
  db="truststack_bench_$$_$replicas"
  psql "$admin" -Xqc "CREATE DATABASE $db"
  cleanups+=("psql '$admin' -Xqc 'DROP DATABASE IF EXISTS $db WITH (FORCE)' 2>/dev/null")
  url="${base%/*}/$db$params"
  fleet=()
  for r in $(seq "$replicas"); do
    start_server "postgres-$replicas-$r" "$url"
    fleet+=("$server_port:$server_pid")
  done
  label="$replicas replica"
  [ "$replicas" -gt 1 ] && label+="s"
  measure "$label, PostgreSQL" "$url" "${fleet[@]}"
  stop_servers
  psql "$admin" -Xqc "DROP DATABASE $db WITH (FORCE)"
done

python3 crates/server/benches/replicas.py report "$work"/window.*.json
