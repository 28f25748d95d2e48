#!/usr/bin/env bash
# Runs every ```sh block of docs/quickstart.md, in order, as one script from the repository root,
# so the quickstart cannot rot. Background processes it starts are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
script="$(mktemp)"
{
  echo 'set -euo pipefail'
  echo 'trap '"'"'kill $(jobs -p) 2>/dev/null || true'"'"' EXIT'
  awk '/^```sh$/ {on = 1; next} /^```$/ {on = 0} on' docs/quickstart.md
} > "$script"
echo "running $(grep -c '' "$script") lines of docs/quickstart.md"
bash "$script"
echo "docs/quickstart.md: every command ran"
