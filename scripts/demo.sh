#!/usr/bin/env bash
# Kiln's main job in one command. Builds kiln, prepares Docker and the local
# test image, copies the sample pipeline of examples/demo into a fresh git
# repository, starts `kiln up` (server + embedded agent + SQLite) beside it,
# registers the repository as a job with its secret, triggers a run and
# follows it to the end, prints the run page's address, and stops the
# server when Enter is pressed.
#
#   scripts/demo.sh            the above
#   scripts/demo.sh --offline  the same pipeline with `kiln run`, no server
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
bash scripts/setup-test-env.sh
# KILN_BIN: a kiln binary already built (the tests pass theirs).
if [ -n "${KILN_BIN:-}" ]; then
    kiln=$KILN_BIN
else
    cargo build --release -q -p kiln
    kiln="$top/target/release/kiln"
fi
work=$(mktemp -d)
# Without Docker, tasks run under uids of their own that must pass through
# the data directory's parents (docs/agents.md, Isolation).
chmod 711 "$work"
mkdir "$work/repo"
cp -r examples/demo/. "$work/repo"
git -C "$work/repo" init -q -b main
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=demo -c user.email=demo@example.com commit -qm "demo"

if [ "${1:-}" = "--offline" ]; then
    shift
    echo "running the demo pipeline in $work/repo"
    cd "$work/repo"
    exec "$kiln" run --secret DEMO_TOKEN=s3cr3t-demo-value "$@"
fi

"$kiln" up --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$work/data" > "$work/up.log" 2>&1 &
up=$!
trap 'kill -TERM "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -q "agent embedded connected" "$work/up.log" && break
    kill -0 "$up" 2>/dev/null || { cat "$work/up.log"; exit 1; }
    sleep 0.1
done
cat "$work/up.log"
KILN_SERVER=$(sed -n 's/.*listening on //p' "$work/up.log")
KILN_TOKEN=$(sed -n 's/.*admin token (shown once, keep it): //p' "$work/up.log")
export KILN_SERVER KILN_TOKEN

"$kiln" job create demo --repository "file://$work/repo"
printf '%s' s3cr3t-demo-value | "$kiln" secret set demo DEMO_TOKEN
status=0
"$kiln" trigger demo -f || status=$?
"$kiln" runs demo
"$kiln" logs demo 1 'test[shard=1]'
password=$(sed -n 's/.*web sign-in: user `admin`, password (shown once, keep it): //p' "$work/up.log")
echo
echo "the run in the browser: $KILN_SERVER/jobs/demo/runs/1"
echo "  sign in as admin, password $password"
# The server stays up while someone looks at the page: until Enter (or the
# end of the input, so a script or a test that gives none is not held up).
echo "press Enter to stop the server"
read -r _ || true
echo "the server's data is in $work/data; to look around again:"
echo "  $kiln up --data-dir $work/data    # then KILN_SERVER=<its URL> KILN_TOKEN=$KILN_TOKEN $kiln runs demo"
exit "$status"
