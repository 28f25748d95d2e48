#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs every peer the tests talk to (see
# install-peers.sh), then runs every test of the workspace and every command of
# docs/quickstart.md. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-peers.sh
cargo test --workspace --locked "$@"
bash scripts/check-quickstart.sh
