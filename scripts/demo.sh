#!/usr/bin/env bash
# Runs Kiln's main job on the sample pipeline in examples/demo: builds kiln,
# prepares Docker and the local image, copies the sample into a fresh git
# repository and runs `kiln run` there.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
bash scripts/setup-test-env.sh
cargo build --release -q -p kiln
work=$(mktemp -d)
cp -r examples/demo/. "$work"
cd "$work"
git init -q -b main
git add -A
git -c user.name=demo -c user.email=demo@example.com commit -qm "demo"
echo "running the demo pipeline in $work"
exec "$top/target/release/kiln" run --secret DEMO_TOKEN=s3cr3t-demo-value "$@"
