#!/usr/bin/env bash
# Installs every peer the test suite talks to, into the project and idempotently (a second run
# with nothing changed does nothing):
#   - Debian packages the tests need (python3-venv, curl, jq; apt-get only when missing);
#   - a project-local Python virtual environment `.venv` with the pinned packages of
#     .ci/peers/requirements.txt (the official `mcp` SDK, PyJWT, cryptography): never the system
#     interpreter, whose pip Debian refuses (PEP 668);
#   - the npm packages pinned by .ci/peers/package-lock.json (the official MCP servers
#     `server-everything` and `server-filesystem`, the TypeScript SDK client, the MCP
#     conformance suite and the Node.js 22 binary it needs, as the `node` package) into
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
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "debian packages: installing ${apt_missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${apt_missing[@]}"
else
  echo "debian packages: up to date"
fi

# Python: .venv, stamped with the hash of the requirements it was made from.
stamp=.venv/.truststack-requirements.sha256
want="$(sha256sum "$peers/requirements.txt" | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "python peers: up to date in .venv"
else
  echo "python peers: installing $peers/requirements.txt into .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$peers/requirements.txt"
  echo "$want" > "$stamp"
fi

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
