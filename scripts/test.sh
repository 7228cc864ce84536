#!/usr/bin/env bash
# The test command: prepares the machine (Docker engine, test images) and runs
# every test of the workspace against those real parts; then holds the REST
# API of the binary just built to its OpenAPI document with schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
cargo test --workspace --all-targets "$@"
target=${CARGO_TARGET_DIR:-target}
bash scripts/schemathesis.sh "$target/debug/kiln"
