#!/usr/bin/env bash
# The test command: prepares the machine (Docker engine, test images) and runs
# every test of the workspace against those real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
cargo test --workspace --all-targets "$@"
