#!/usr/bin/env bash
# Holds the REST API to its own description: schemathesis (PyPI, 4.x) reads
# /api/openapi.json from a real `kiln server` and runs every check in every
# phase (examples, coverage, fuzzing, stateful) with the admin token.
# Exits non-zero on any failure. Builds nothing: give it the kiln binary.
#
#   scripts/schemathesis.sh target/debug/kiln
#
# KILN_SCHEMATHESIS_EXAMPLES (examples per operation, default 200) and
# KILN_SCHEMATHESIS_SEED (default fixed, so CI is repeatable) tune the run.
#
# No operation and no check is excluded. Four things need saying:
# - scripts/schemathesis.toml lets positive_data_acceptance accept 422 from
#   the operations whose answer depends on more than the request's shape: a
#   freestyle pipeline's validity (create_job, put_job) and whether a commit
#   can be resolved (trigger_run); and 416 from get_console and
#   get_artifact, whose ranges are satisfiable or not by the length of the
#   log or the file. Everything
#   else a schema can say, it says, and the check holds the server to it.
# - `follow=true` on the console streams until the task ends; the tasks
#   this run makes (the seeded pipeline's `echo`) end at once, so it stays
#   in, under a request timeout that turns a hang into a failure.
# - stream_events (`GET /api/v1/events`) lasts until the client leaves;
#   scripts/schemathesis.toml gives it `timeout=0`, which ends it at once.
# - revoke_token is called with an id no token has, so the run does not
#   revoke its own admin token (scripts/schemathesis.toml says why).
set -euo pipefail

kiln=${1:?usage: scripts/schemathesis.sh PATH/TO/kiln}
kiln=$(cd "$(dirname "$kiln")" && pwd)/$(basename "$kiln")
scripts=$(cd "$(dirname "$0")" && pwd)
examples=${KILN_SCHEMATHESIS_EXAMPLES:-200}
seed=${KILN_SCHEMATHESIS_SEED:-20240909}

log() { printf '[schemathesis] %s\n' "$*" >&2; }

# The module, not the console script: it is where pip put it, PATH or not.
schemathesis() { python3 -m schemathesis.cli "$@"; }
if ! schemathesis --version >/dev/null 2>&1; then
  log "schemathesis is not installed: run scripts/setup-test-env.sh"
  exit 1
fi

work=$(mktemp -d)
# The server's own agent runs tasks under uids of their own, which must be
# able to pass through the data directory's parents (docs/agents.md).
chmod 711 "$work"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

token=kiln_admin_schemathesis_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# The fuzzer makes up repository URLs: git must reach nothing outside this
# machine, whatever it is given (an unreachable local proxy for http(s),
# a failing proxy command for git://).
KILN_ADMIN_TOKEN=$token \
  http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
  ALL_PROXY=http://127.0.0.1:9 no_proxy= NO_PROXY= GIT_PROXY_COMMAND=false \
  "$kiln" server --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --data-dir "$work/data" --worker --worker-executor process \
  >"$work/server.log" 2>&1 &
server=$!

url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's/^kiln server listening on //p' "$work/server.log")
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$url" ]; then
  log "the server did not start; its output follows"
  cat "$work/server.log" >&2
  exit 1
fi
log "server at $url"

# The document's examples name job `app`, run 1, task `build`, artifact
# `report.xml`, secret `DEPLOY_KEY`: make them exist, so the examples reach
# a real job, run, task, log, JUnit report, artifact and secret.
api() {
  curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"
}
job=$(python3 -c 'import json, sys; print(json.dumps({"kind": "freestyle", "pipeline": sys.stdin.read()}))' <<'YAML'
version: 1
tasks:
  build:
    steps:
      - run: echo hello; printf '<testsuite name="s" tests="1"><testcase name="t"/></testsuite>' > report.xml
    artifacts: { paths: ["report.xml"] }
    reports: { junit: ["report.xml"] }
YAML
)
api -X PUT "$url/api/v1/jobs/app" -d "$job" >/dev/null
api -X PUT "$url/api/v1/jobs/app/secrets/DEPLOY_KEY" -d '{"value": "s3cret"}' >/dev/null
api -X POST "$url/api/v1/jobs/app/runs" >/dev/null
for _ in $(seq 1 150); do
  api "$url/api/v1/jobs/app/runs/1" | grep -q '"status":"success"' && break
  sleep 0.2
done
api "$url/api/v1/jobs/app/runs/1/tasks/build/results/junit" >/dev/null || {
  log "the seeded run did not finish with its report; the server's log follows"
  cat "$work/server.log" >&2
  exit 1
}

started=$(date +%s)
status=0
(
  cd "$work"
  schemathesis --config-file "$scripts/schemathesis.toml" run "$url/api/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    -H "Authorization: Bearer $token" \
    --max-examples "$examples" \
    --seed "$seed" \
    --request-timeout 30 \
    --generation-database none \
    --no-color
) || status=$?
log "finished in $(($(date +%s) - started)) s"
if [ "$status" -ne 0 ]; then
  log "failed (exit $status); the server's log follows"
  tail -n 100 "$work/server.log" >&2
fi
exit "$status"
