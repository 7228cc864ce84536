#!/usr/bin/env bash
# The dashboard (`/`) with 10 000 runs stored: how long the server takes to
# answer it, how long a real browser (Debian's chromium over chromedriver)
# takes to show it, and how long a run triggered through the API takes to
# appear on an open dashboard (the live feed, live.js). Figures are printed,
# not asserted; docs/ui.md reports them.
#
#   scripts/bench-ui-dashboard.sh                 builds target/release/kiln
#   KILN_BIN=path/to/kiln scripts/bench-ui-dashboard.sh
#
# The runs are made through the API, as a forge or a person would: 200
# freestyle jobs (20 public) with 50 runs each, on a server without a worker
# (so they stay queued; the dashboard's cost does not depend on status) and
# SQLite. KILN_BENCH_JOBS and KILN_BENCH_RUNS_PER_JOB change the size.
# Needs python3 (standard library only), chromium and chromedriver
# (scripts/setup-test-env.sh installs them). Takes a few minutes.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
if [ -n "${KILN_BIN:-}" ]; then
    kiln=$KILN_BIN
else
    cargo build --release -q -p kiln
    kiln="$top/target/release/kiln"
fi
work=$(mktemp -d)
trap 'kill -TERM "${server:-}" "${driver:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
token=kiln_admin_bench_token_0123456789
password=bench-admin-password-42
KILN_ADMIN_TOKEN=$token KILN_ADMIN_PASSWORD=$password \
    "$kiln" server --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
    --data-dir "$work/data" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    grep -q "listening on" "$work/server.log" && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/.*listening on //p' "$work/server.log" | head -n1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
chromedriver --port="$port" > "$work/driver.log" 2>&1 &
driver=$!
echo "kiln: $kiln"
KILN_URL=$url KILN_TOKEN=$token KILN_PASSWORD=$password DRIVER="http://127.0.0.1:$port" \
    python3 - <<'PY'
import concurrent.futures, http.client, json, os, statistics, time, urllib.parse, urllib.request

URL = os.environ["KILN_URL"]
TOKEN = os.environ["KILN_TOKEN"]
DRIVER = os.environ["DRIVER"]
JOBS = int(os.environ.get("KILN_BENCH_JOBS", "200"))
PER_JOB = int(os.environ.get("KILN_BENCH_RUNS_PER_JOB", "50"))
host = urllib.parse.urlparse(URL)
PIPELINE = "version: 1\ntasks:\n  check:\n    steps:\n      - run: 'true'\n"


def call(method, path, body=None, headers=None, connection=None):
    own = connection is None
    connection = connection or http.client.HTTPConnection(host.hostname, host.port)
    sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body)
        sent["Content-Type"] = "application/json"
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    text = response.read()
    if own:
        connection.close()
    return response, text


def ms(values):
    values = sorted(values)
    p95 = values[max(0, -(-len(values) * 95 // 100) - 1)]
    return "median %.1f ms, p95 %.1f ms (%d samples)" % (statistics.median(values), p95, len(values))


names = [f"job-{i:03}" for i in range(JOBS)]
for i, name in enumerate(names):
    response, text = call("PUT", f"/api/v1/jobs/{name}", {
        "kind": "freestyle", "pipeline": PIPELINE,
        "visibility": "public" if i % 10 == 0 else "private"})
    assert response.status in (200, 201), text
response, text = call("POST", "/api/v1/users", {"name": "reader", "password": "a-long-reader-password"})
assert response.status == 201, text
for name in names[1:6]:
    response, text = call("PUT", f"/api/v1/jobs/{name}/members/reader", {"role": "viewer"})
    assert response.status in (200, 201), text

started = time.perf_counter()


def trigger_all(name):
    connection = http.client.HTTPConnection(host.hostname, host.port)
    for _ in range(PER_JOB):
        response, text = call("POST", f"/api/v1/jobs/{name}/runs", {}, connection=connection)
        assert response.status == 201, text
    connection.close()


with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(trigger_all, names))
seeded = time.perf_counter() - started
print(f"stored {JOBS * PER_JOB} runs of {JOBS} jobs through the API in {seeded:.1f} s")

# The server's time: the whole answer of `/`, over one kept-alive
# connection, for an admin (every job), a member of 5 private jobs (and the
# 20 public ones) and an anonymous visitor (the public ones).
login = http.client.HTTPConnection(host.hostname, host.port)
login.request("POST", "/login", body=json.dumps({"username": "reader", "password": "a-long-reader-password"}),
              headers={"Content-Type": "application/json"})
response = login.getresponse()
response.read()
cookie = response.getheader("Set-Cookie").split(";")[0]
for who, headers in [("admin", {"Authorization": f"Bearer {TOKEN}"}), ("member", {"Cookie": cookie}),
                     ("anonymous", {})]:
    connection = http.client.HTTPConnection(host.hostname, host.port)
    times = []
    for i in range(60):
        begun = time.perf_counter()
        connection.request("GET", "/", headers={**headers, "Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body[:200]
        if i >= 10:  # the first answers warm the caches
            times.append((time.perf_counter() - begun) * 1000)
    connection.close()
    print(f"server: GET / as {who}: {ms(times)} ({len(body)} bytes gzipped)")


def webdriver(method, path, body=None):
    request = urllib.request.Request(DRIVER + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())["value"]


for _ in range(100):
    try:
        webdriver("GET", "/status")
        break
    except OSError:
        time.sleep(0.1)
session = webdriver("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--window-size=1280,1000"]}}}})["sessionId"]


def run(script, args=()):
    return webdriver("POST", f"/session/{session}/execute/sync", {"script": script, "args": list(args)})


def run_async(script, args=()):
    return webdriver("POST", f"/session/{session}/execute/async", {"script": script, "args": list(args)})


def goto(path):
    webdriver("POST", f"/session/{session}/url", {"url": URL + path})


try:
    webdriver("POST", f"/session/{session}/timeouts", {"script": 60000})
    goto("/login")
    run("document.getElementById('username').value = 'admin';"
        "document.getElementById('password').value = arguments[0];"
        "document.querySelector('form[action^=\"/login\"]').submit();", [os.environ["KILN_PASSWORD"]])
    for _ in range(100):
        if run("return location.pathname + document.readyState") == "/complete":
            break
        time.sleep(0.1)
    # In the browser: the navigation's timing, from asking to painting.
    marks = {"first byte": [], "first contentful paint": [], "DOM ready": [], "load": []}
    for _ in range(15):
        goto("/")
        # The first paint may come after the load event: wait for it.
        timing = run_async("""
            const done = arguments[arguments.length - 1];
            const n = performance.getEntriesByType('navigation')[0];
            const answer = (p) => done([n.responseStart - n.startTime, p ? p.startTime : null,
                    n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime,
                    document.querySelectorAll('#live-runs tbody tr').length]);
            new PerformanceObserver((list) => {
                const p = list.getEntriesByName('first-contentful-paint')[0];
                if (p) answer(p);
            }).observe({type: 'paint', buffered: true});
            setTimeout(() => answer(null), 3000);""")
        for name, value in zip(marks, timing):
            if value is not None:
                marks[name].append(value)
        rows = timing[4]
    for name, values in marks.items():
        print(f"browser: / as admin ({rows} rows): {name}: {ms(values[3:])}")

    # Live: from the API call that makes a run to its row on the open
    # dashboard, both read on the browser's clock.
    latencies = []
    for _ in range(12):
        time.sleep(1)
        latency = run_async("""
            const done = arguments[arguments.length - 1];
            const started = performance.now();
            let key = null;
            const look = () => {
                if (key && document.querySelector(`tr[data-key="${key}"]`)) {
                    requestAnimationFrame(() => done(performance.now() - started));
                    return true;
                }
                return false;
            };
            new MutationObserver(look).observe(document.getElementById('live-runs'),
                                               {childList: true, subtree: true});
            fetch('/api/v1/jobs/job-000/runs', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                 body: '{}', credentials: 'same-origin'})
                .then((r) => r.json())
                .then((run) => { key = `run-${run.job}-${run.number}`; look(); });""")
        latencies.append(latency)
    print(f"live: API trigger -> row visible on the open dashboard: {ms(latencies[2:])}, "
          f"max {max(latencies[2:]):.0f} ms")
finally:
    webdriver("DELETE", f"/session/{session}")
PY
