#!/usr/bin/env bash
# The log view's benchmark: a real `kiln server` and Debian's chromium
# under chromedriver (scripts/setup-test-env.sh installs both).
#
# For each size (1 MB, 100 MB and 1 GB by default; SIZES_MB="1 100 1024"),
# it runs a task whose log is big enough to move to the blob store, puts an
# ANSI-coloured log of that size in its place (generated here: pushing
# 1 GB through a task would measure the agent and the database, not the
# page), and measures:
#
# - the line index: the first request of a window builds it (a log moved
#   by the server gets it as it moves; this one was put in place by hand);
# - in the browser, opening the task page: first contentful paint (the log
#   is in the server's HTML, so its first lines are in the first paint),
#   largest contentful paint, load, the longest task, and how many log
#   lines the page holds;
# - on the server, a window of 1 000 lines three quarters into the log
#   (median of 5), and a search that scans the whole log backwards to its
#   first line.
#
#   scripts/bench-ui-log.sh                 builds target/release/kiln
#   KILN_BIN=path/to/kiln scripts/bench-ui-log.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES_MB=${SIZES_MB:-"1 100 1024"}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${KILN_BIN:-}" ]; then
  KILN=$KILN_BIN
else
  cargo build --release -q -p kiln
  KILN="$TARGET/release/kiln"
fi
TOKEN=kiln_bench_admin_token_0123456789
work=$(mktemp -d)
# Tasks run as users of their own, who must reach the data directory.
chmod 755 "$work"
server_pid=""
driver_pid=""
cleanup() {
  [ -n "${BENCH_DEBUG:-}" ] && tail -20 "$work/server.err"
  [ -n "$driver_pid" ] && kill -- "-$driver_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

KILN_ADMIN_TOKEN=$TOKEN "$KILN" server --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --data-dir "$work/data" --worker --worker-executor process >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 600); do
  url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/server.out" | head -1)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/server.err"; echo "the server did not start" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid chromedriver --port="$port" >/dev/null 2>&1 &
driver_pid=$!
for _ in $(seq 1 300); do
  curl --noproxy "*" -sf "http://127.0.0.1:$port/status" >/dev/null && break
  sleep 0.1
done

export KILN_URL=$url KILN_TOKEN=$TOKEN DRIVER="http://127.0.0.1:$port" BLOBS="$work/data/blobs" SIZES_MB
echo "kiln: $KILN ($("$KILN" --version)); chromium: $(chromium --version 2>/dev/null | head -1)"
python3 - <<'PY'
import glob, json, os, statistics, time, urllib.request

URL, TOKEN, DRIVER, BLOBS = (os.environ[k] for k in ("KILN_URL", "KILN_TOKEN", "DRIVER", "BLOBS"))
# Everything is on loopback: no proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def call(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with OPENER.open(request, timeout=600) as response:
        text = response.read()
    return json.loads(text) if text else None

def api(method, path, body=None):
    return call(method, URL + path, body, TOKEN)

def timed(path):
    started = time.perf_counter()
    answer = call("GET", URL + path)
    return time.perf_counter() - started, answer

# One ANSI-coloured megabyte, repeated: timestamps, levels, paths.
def block():
    lines, n = [], 0
    while sum(map(len, lines)) < (1 << 20):
        n += 1
        level = ["\x1b[32mINFO\x1b[0m", "\x1b[33mWARN\x1b[0m", "\x1b[1;31mFAIL\x1b[0m"][n % 3]
        lines.append(f"\x1b[2m2026-12-03T12:{n % 60:02d}:{n % 59:02d}Z\x1b[0m {level} "
                     f"compiling crate_{n % 97} (src/module_{n % 13}.rs:{n}) \x1b[38;5;{n % 256}mok\x1b[0m\n")
    return "".join(lines).encode()

BLOCK = block()

session = call("POST", DRIVER + "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--window-size=1280,1000"]}}}})["value"]["sessionId"]
WD = f"{DRIVER}/session/{session}"

MEASURE = """
const done = arguments[arguments.length - 1];
const wanted = ['paint', 'largest-contentful-paint', 'longtask'];
const seen = {paint: [], 'largest-contentful-paint': [], longtask: []};
for (const type of wanted) {
  try { new PerformanceObserver((list) => seen[type].push(...list.getEntries()))
          .observe({type, buffered: true}); } catch (e) {}
}
setTimeout(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = seen.paint.find((e) => e.name === 'first-contentful-paint');
  const lcp = seen['largest-contentful-paint'].at(-1);
  done({
    fcp: fcp ? fcp.startTime : null,
    lcp: lcp ? lcp.startTime : null,
    load: nav.loadEventEnd,
    longest_task: Math.max(0, ...seen.longtask.map((e) => e.duration)),
    lines: document.querySelectorAll('.log .l').length,
    last: (document.querySelector('.log .l:last-child') || {id: ''}).id,
  });
}, 1500);
"""

print(f"{'log':>8} {'lines':>12} {'index':>8} {'FCP':>7} {'LCP':>7} {'load':>7} {'long task':>9} "
      f"{'DOM lines':>9} {'window':>8} {'search all':>10}")
for size_mb in os.environ["SIZES_MB"].split():
    size_mb = int(size_mb)
    job = f"bench-{size_mb}mb"
    api("PUT", f"/api/v1/jobs/{job}", {"kind": "freestyle", "visibility": "public", "pipeline":
        "version: 1\ntasks:\n  log:\n    steps:\n      - run: seq 1 60000\n"})
    before = set(glob.glob(f"{BLOBS}/**/consoles/*.log", recursive=True))
    api("POST", f"/api/v1/jobs/{job}/runs", {})
    while api("GET", f"/api/v1/jobs/{job}/runs/1")["status"] in ("pending", "queued", "running"):
        time.sleep(0.2)
    [log] = set(glob.glob(f"{BLOBS}/**/consoles/*.log", recursive=True)) - before
    with open(log, "wb") as out:
        out.write(b"kiln-bench-needle: the first line\n")
        for _ in range(size_mb):
            out.write(BLOCK)
    os.remove(log + ".index")
    page = f"/jobs/{job}/runs/1/tasks/log"
    index_time, tail = timed(page + "/log")
    total = tail["total"]
    call("POST", WD + "/url", {"url": URL + page})
    seen = call("POST", WD + "/execute/async", {"script": MEASURE, "args": []})["value"]
    assert seen["last"] == f"L{total}", seen
    windows = [timed(f"{page}/log?line={total * 3 // 4}")[0] for _ in range(5)]
    search_time, found = timed(f"{page}/log/search?q=kiln-bench-needle&back=1")
    assert found["line"] == 1, found
    ms = lambda s: f"{s * 1000:.0f} ms"
    print(f"{size_mb:>6}MB {total:>12} {ms(index_time):>8} {seen['fcp']:>5.0f}ms {seen['lcp'] or 0:>5.0f}ms "
          f"{seen['load']:>5.0f}ms {seen['longest_task']:>7.0f}ms {seen['lines']:>9} "
          f"{ms(statistics.median(windows)):>8} {ms(search_time):>10}", flush=True)
call("DELETE", WD)
PY
