#!/usr/bin/env bash
# Installs the real MCP peers the gateway's end-to-end tests talk to, idempotently:
#   - npm: @modelcontextprotocol/server-everything, @modelcontextprotocol/server-filesystem and
#     the TypeScript SDK client (@modelcontextprotocol/sdk), pinned in .ci/peers/package.json and
#     .ci/peers/package-lock.json, into .ci/peers/node_modules (where the tests look for them);
#   - PyPI: the official `mcp` SDK, pinned in .ci/pip-requirements.txt (also installed by .ci/run).
# A second run with nothing changed does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=.ci/peers
stamp="$peers/node_modules/.truststack-lock.sha256"
want="$(sha256sum "$peers/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -x "$peers/node_modules/.bin/mcp-server-everything" ] \
  && [ -x "$peers/node_modules/.bin/mcp-server-filesystem" ]; then
  echo "npm peers: up to date"
else
  echo "npm peers: installing from $peers/package-lock.json"
  npm ci --prefix "$peers" --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

mcp_pin="$(grep -E '^mcp([=<>~! ]|$)' .ci/pip-requirements.txt | head -1 || true)"
mcp_version="${mcp_pin#mcp==}"
have="$(python3 -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true)"
if [ -n "$mcp_pin" ] && [ "$have" != "$mcp_version" ]; then
  echo "python peers: installing $mcp_pin"
  python3 -m pip install --quiet --disable-pip-version-check "$mcp_pin"
else
  echo "python peers: mcp ${have:-missing} (wanted: ${mcp_pin:-none})"
fi
