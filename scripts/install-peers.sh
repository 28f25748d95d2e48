#!/usr/bin/env bash
# Installs every peer the test suite talks to, into the project and idempotently (a second run
# with nothing changed does nothing):
#   - Debian packages the tests need (python3-venv, curl, jq, chromium and chromium-driver, and
#     postgresql when no PostgreSQL server answers on 127.0.0.1:5432 and initdb is missing, so
#     the tests can start a throwaway cluster; apt-get only when missing);
#   - a project-local Python virtual environment `.venv` with the pinned packages of
#     .ci/peers/requirements.txt (the official `mcp` SDK, PyJWT, cryptography): never the system
#     interpreter, whose pip Debian refuses (PEP 668); and `.venv-2026` with the `mcp` SDK of
#     .ci/peers/requirements-2026.txt, which speaks protocol revision 2026-07-28;
#   - the npm packages pinned by .ci/peers/package-lock.json (the official MCP servers
#     `server-everything` and `server-filesystem`, the TypeScript SDK client, the MCP
#     conformance suite and the Node.js 22 binary it needs, as the `node` package; playwright-core
#     and axe-core for the console's browser tests) into
#     .ci/peers/node_modules.
# Needs only python3, node/npm and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=.ci/peers

# Debian packages, installed only where missing. `python3 -m venv` needs ensurepip, which
# Debian ships separately as python3-venv.
apt_missing=()
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  apt_missing+=(python3-venv)
fi
# The documentation's transcripts, which the tests run, use curl and jq.
for tool in curl jq; do
  command -v "$tool" >/dev/null || apt_missing+=("$tool")
done
# The console's browser tests drive Debian's Chromium (through playwright-core, from npm below).
command -v chromium >/dev/null || apt_missing+=(chromium)
command -v chromedriver >/dev/null || apt_missing+=(chromium-driver)
# The PostgreSQL ledger's tests need a server: TRUSTSTACK_TEST_DATABASE_URL, the local one on
# 127.0.0.1:5432, or a throwaway cluster they start with initdb (see crates/testkit/src/postgres.rs).
postgres_answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
have_initdb() { command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
if [ -z "${TRUSTSTACK_TEST_DATABASE_URL:-}" ] && ! postgres_answers && ! have_initdb; then
  apt_missing+=(postgresql)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "debian packages: installing ${apt_missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${apt_missing[@]}"
else
  echo "debian packages: up to date"
fi

# Python: a virtual environment per requirements file, stamped with the hash of the
# requirements it was made from: .venv (the project's), .venv-2026 (the SDK speaking MCP
# 2026-07-28, which the 1.x SDK of .venv does not).
python_env() {
  local dir=$1 requirements=$2
  local stamp="$dir/.truststack-requirements.sha256"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "python peers: up to date in $dir"
  else
    echo "python peers: installing $requirements into $dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
}
python_env .venv "$peers/requirements.txt"
python_env .venv-2026 "$peers/requirements-2026.txt"

# npm: node_modules, stamped with the hash of the lockfile it was installed from.
stamp="$peers/node_modules/.truststack-lock.sha256"
want="$(sha256sum "$peers/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "npm peers: up to date in $peers/node_modules"
else
  echo "npm peers: installing $peers/package-lock.json"
  npm ci --prefix "$peers" --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
