# What the load benchmarks of `truststack serve` share (load.sh, replicas.sh); sourced by them
# from the repository's root. It sets:
#
#   bin    the `truststack` binary (TRUSTSTACK_BIN, or the release build, built now)
#   work   a temporary directory, removed on exit with everything in `cleanups`
#   $work/decide.lua   the decision workload for wrk
#
# and defines start_server and stop_servers. Servers started here are stopped on exit.
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
if [ -n "${TRUSTSTACK_BIN:-}" ]; then
  bin="$TRUSTSTACK_BIN"
else
  cargo build --release -p truststack >&2
  bin="${CARGO_TARGET_DIR:-target}/release/truststack"
fi
work="$(mktemp -d)"
servers=()
cleanups=()
bench_exit() {
  stop_servers
  local c
  for c in "${cleanups[@]}"; do eval "$c" || true; done
  rm -rf "$work"
}
trap bench_exit EXIT

# start_server NAME LEDGER: starts `truststack serve` on a free loopback port with the ledger at
# LEDGER (a file or a postgres:// URL) signed with $work/ledger.key, and waits until it is ready.
# Sets server_pid and server_port; the server's log is $work/NAME.log.
start_server() {
  local name="$1" ledger="$2"
  server_port=$((20000 + RANDOM % 20000))
  while (echo >"/dev/tcp/127.0.0.1/$server_port") 2>/dev/null; do
    server_port=$((20000 + RANDOM % 20000))
  done
  cat > "$work/$name.toml" <<TOML
listen = "127.0.0.1:$server_port"
policies = ["$PWD/examples/gtg1002/policies/seed.tsp"]
catalog = "$PWD/examples/gtg1002/catalog.toml"
require_credentials = ${REQUIRE_CREDENTIALS:-false}

[ledger]
path = "$ledger"
key = "$work/ledger.key"
TOML
  "$bin" serve --config "$work/$name.toml" 2> "$work/$name.log" &
  server_pid=$!
  servers+=("$server_pid")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$server_port/readyz" >/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not become ready; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# stop_servers: stops every server started so far and waits for them to exit.
stop_servers() {
  local pid
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
  servers=()
}

# Each request decides a benign call for one of 1000 agents (so no limit interferes), in a
# different session: the full decision path, ledger write included. With WRK_HISTOGRAM set, wrk
# also writes its latency histogram there at the end ("microseconds count" a line), so that the
# histograms of several wrk processes can be added up exactly.
cat > "$work/decide.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"tool":"read_docs","args":{"page":"p%d"},"session":"s-%d","agent":"spiffe://acme.example/agent/a%d","chain":["user:load@acme.example"]}', n, n % 97, n % 1000)
  return wrk.format(nil, "/v1/decide", nil, body)
end
done = function(summary, latency, requests)
  local path = os.getenv("WRK_HISTOGRAM")
  if not path then return end
  local f = assert(io.open(path, "w"))
  for i = 1, #latency do
    local value, count = latency(i)
    f:write(value, " ", count, "\n")
  end
  f:close()
end
LUA
