#!/usr/bin/env bash
# Webhook intake (issue 14): how many signed GitHub pushes per second
# `POST /hooks/{forge}` accepts (keep-alive clients), and the time from a
# hook's request to its run's first step started (p50/p99), on a release
# server with SQLite and its own worker (process executor), for a job of a
# real git repository (file://). Figures are printed, not asserted; the
# README reports them.
#
#   scripts/bench-hooks.sh                 builds target/release/kiln
#   KILN_BIN=path/to/kiln scripts/bench-hooks.sh
#
# KILN_BENCH_HOOKS (default 2000) pushes for the rate, sent by
# KILN_BENCH_CLIENTS (default 8) connections; KILN_BENCH_LATENCY (default
# 100) pushes for the latency, one at a time on an idle server, each
# waited for. The latency part runs first, before the rate's runs queue up.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
if [ -n "${KILN_BIN:-}" ]; then
    kiln=$KILN_BIN
else
    cargo build --release -q -p kiln
    kiln="${CARGO_TARGET_DIR:-$top/target}/release/kiln"
fi
work=$(mktemp -d)
# The process executor runs tasks as users of their own, who must reach it.
chmod o+x "$work"
trap 'kill -TERM "${server:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" 2>/dev/null || true' EXIT
repo="$work/repo"
mkdir -p "$repo"
git -C "$repo" init -q -b main
printf 'version: 1\ntasks:\n  check:\n    steps:\n      - run: "true"\n' > "$repo/.kiln.yml"
git -C "$repo" add .
git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -q -m pipeline
sha=$(git -C "$repo" rev-parse HEAD)
token=kiln_admin_bench_token_0123456789
KILN_ADMIN_TOKEN=$token \
    "$kiln" server --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$work/data" \
    --worker --worker-executor process --worker-capacity 4 > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    grep -q "listening on" "$work/server.log" && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/.*listening on //p' "$work/server.log" | head -n1)
echo "kiln: $kiln, server: $url"
KILN_URL=$url KILN_TOKEN=$token REPO="file://$repo" SHA=$sha python3 - <<'PY' || { tail -20 "$work/server.log"; exit 1; }
import concurrent.futures, datetime, hashlib, hmac, http.client, json, os, threading, time, urllib.parse

URL = os.environ["KILN_URL"]
TOKEN = os.environ["KILN_TOKEN"]
REPO = os.environ["REPO"]
SHA = os.environ["SHA"]
HOOKS = int(os.environ.get("KILN_BENCH_HOOKS", "2000"))
CLIENTS = int(os.environ.get("KILN_BENCH_CLIENTS", "8"))
LATENCY = int(os.environ.get("KILN_BENCH_LATENCY", "100"))
SECRET = b"bench-webhook-secret"
host = urllib.parse.urlparse(URL)


def call(connection, method, path, body=None, headers=None):
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


def api(method, path, body=None):
    connection = http.client.HTTPConnection(host.hostname, host.port)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, text = call(connection, method, path, json.dumps(body) if body else None, headers)
    connection.close()
    assert status < 300, (status, text)
    return json.loads(text) if text else None


api("PUT", "/api/v1/forges/hub", {"kind": "github", "api_url": "https://api.github.com", "webhook_secret": SECRET.decode()})
api("PUT", "/api/v1/jobs/bench", {"kind": "git", "repository": REPO, "forge": "hub"})

PUSH = json.dumps({
    "ref": "refs/heads/main", "before": "0" * 40, "after": SHA,
    "head_commit": {"id": SHA},
    "repository": {"id": 1, "full_name": "bench/repo", "clone_url": REPO},
    "sender": {"login": "bench"},
}).encode()
SIGNATURE = "sha256=" + hmac.new(SECRET, PUSH, hashlib.sha256).hexdigest()


def hook(connection, delivery):
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": SIGNATURE}
    status, text = call(connection, "POST", "/hooks/hub", PUSH, headers)
    assert status == 202, (status, text)


def parse(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# Latency: one push at a time, to its run's first step started.
connection = http.client.HTTPConnection(host.hostname, host.port)
waits = []
for number in range(1, LATENCY + 1):
    sent = time.time()
    hook(connection, f"latency-{number}")
    while True:
        try:
            run = api("GET", f"/api/v1/jobs/bench/runs/{number}")
        except AssertionError:
            run = None
        steps = [s for t in (run or {}).get("tasks", []) for s in t["steps"] if s.get("started_at")]
        if steps:
            waits.append((min(parse(s["started_at"]) for s in steps) - sent) * 1000)
            break
        time.sleep(0.005)
waits.sort()
p = lambda q: waits[max(0, -(-len(waits) * q // 100) - 1)]
print("hook to first step started: p50 %.0f ms, p99 %.0f ms, max %.0f ms (%d pushes)"
      % (p(50), p(99), waits[-1], len(waits)))

# Rate: signed pushes accepted per second, keep-alive connections.
counter = iter(range(HOOKS))
lock = threading.Lock()


def client(_):
    connection = http.client.HTTPConnection(host.hostname, host.port)
    while True:
        with lock:
            n = next(counter, None)
        if n is None:
            return
        hook(connection, f"rate-{n}")


start = time.time()
with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
    list(pool.map(client, range(CLIENTS)))
elapsed = time.time() - start
print("accepted %d signed pushes in %.2f s: %.0f per second (%d keep-alive clients)"
      % (HOOKS, elapsed, HOOKS / elapsed, CLIENTS))
PY
