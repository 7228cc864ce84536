#!/usr/bin/env bash
# Runs the benchmarks whose figures the README reports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
cargo bench -p kiln --bench overhead
cargo bench -p kiln --bench server
# The agents bench runs target/release/kiln as real server and agent processes.
cargo build --release -p kiln
cargo bench -p kiln --bench agents
cargo bench -p kiln-store-sqlite --bench claims
cargo bench -p kiln-store-postgres --bench claims
