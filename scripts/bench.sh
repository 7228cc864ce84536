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
# The web UI in a real browser: a log view of 1 MB to 1 GB, and the
# dashboard with 10 000 runs (both use target/release/kiln).
bash scripts/bench-ui-log.sh
bash scripts/bench-ui-dashboard.sh
# Webhook intake: signed pushes per second, hook to first step.
bash scripts/bench-hooks.sh
