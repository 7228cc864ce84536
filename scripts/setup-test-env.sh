#!/usr/bin/env bash
# Prepares a machine to run Kiln's tests with real parts: a running Docker
# engine and the local test images. Safe to run again; does only what is missing.
# No container registry is reachable from CI, so test images are made locally
# from Debian's busybox-static instead of being pulled.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  if [ -z "${KILN_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    export KILN_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_docker() {
  if engine_answers; then
    log "Docker engine answers"
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    apt_install docker.io
  fi
  # A dockerd killed without warning leaves its pid file, which stops the
  # next one from starting.
  local pidfile=/var/run/docker.pid
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "removing stale $pidfile"
    as_root rm -f "$pidfile"
  fi
  log "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/kiln-dockerd.log 2>&1 & echo $! >/tmp/kiln-dockerd.pid'
  for _ in $(seq 1 120); do
    engine_answers && { log "Docker engine is up"; return; }
    kill -0 "$(cat /tmp/kiln-dockerd.pid)" 2>/dev/null || break
    sleep 0.5
  done
  log "dockerd did not come up; its log follows"
  tail -n 50 /var/log/kiln-dockerd.log >&2 || true
  exit 1
}

# kiln-test/busybox:latest — a root filesystem holding only a static busybox.
ensure_busybox_image() {
  local image=kiln-test/busybox:latest
  if docker image inspect "$image" >/dev/null 2>&1; then
    log "$image present"
    return
  fi
  if [ ! -x /bin/busybox ] || ! file_is_static /bin/busybox; then
    log "installing busybox-static"
    apt_install busybox-static
  fi
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root" "$root/www"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
  rm -rf "$root"
  log "built $image"
}

# The OpenAPI document is checked by an independent validator from PyPI.
ensure_openapi_validator() {
  if python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    return
  fi
  log "installing openapi-spec-validator"
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >&2
}

# scripts/schemathesis.sh fuzzes the REST API against its OpenAPI document.
ensure_schemathesis() {
  if python3 -m schemathesis.cli --version 2>/dev/null | grep -q 'version 4\.'; then
    return
  fi
  log "installing schemathesis 4"
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5' >&2
}

# The web UI's browser tests drive Debian's chromium through Debian's
# chromedriver (WebDriver).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    log "chromium and chromedriver present"
    return
  fi
  log "installing chromium and chromium-driver"
  apt_install chromium chromium-driver
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# PostgreSQL on 127.0.0.1:5432 with role `kiln` (password `kiln`) and
# database `kiln`: what the PostgreSQL store's tests connect to
# (KILN_TEST_DATABASE_URL overrides it). Debian's cluster tools run it.
KILN_PG_URL_CHECK="host=127.0.0.1 port=5432 user=kiln dbname=kiln connect_timeout=3"

pg_answers() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

pg_kiln_ready() {
  PGPASSWORD=kiln psql "$KILN_PG_URL_CHECK" -qAtc 'SELECT 1' >/dev/null 2>&1
}

as_postgres() { as_root runuser -u postgres -- "$@"; }

# Whether $1 is a running (not zombie) postgres process.
pg_pid_alive() {
  [ -n "$1" ] && [ -r "/proc/$1/status" ] \
    && grep -q '^Name:[[:space:]]*postgres' "/proc/$1/status" \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"
}

clear_stale_pg_lock() {
  as_root test -f "$1" || return 0
  local pid
  pid=$(as_root head -n 1 "$1" | tr -dc '0-9')
  if ! pg_pid_alive "$pid"; then
    log "removing stale $1"
    as_root rm -f "$1"
  fi
}

ensure_postgres() {
  if pg_answers && pg_kiln_ready; then
    log "PostgreSQL answers on 127.0.0.1:5432"
    return
  fi
  if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing postgresql"
    apt_install postgresql
  fi
  # Debian's binaries, not whatever else is first on PATH (/usr/local/bin
  # may hold other initdb/pg_ctl/postgres builds).
  local bin version
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  version=$(basename "$(dirname "$bin")")
  if ! pg_answers; then
    if [ ! -d "/etc/postgresql/$version/main" ]; then
      log "creating PostgreSQL $version cluster main"
      as_root pg_createcluster "$version" main >/dev/null
    fi
    local data
    data=$(as_root sed -n "s/^data_directory *= *'\([^']*\)'.*/\1/p" \
      "/etc/postgresql/$version/main/postgresql.conf")
    data=${data:-/var/lib/postgresql/$version/main}
    # The socket directory lives on a tmpfs on many machines.
    as_root install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    log "starting PostgreSQL $version"
    local attempt
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      # A postmaster killed without warning leaves its pid and socket lock
      # files; postgres refuses to start over them while their pid looks
      # alive, and the children of a killed postmaster take a moment to go.
      clear_stale_pg_lock "$data/postmaster.pid"
      clear_stale_pg_lock /var/run/postgresql/.s.PGSQL.5432.lock
      as_root pg_ctlcluster "$version" main start 2>/dev/null && break
      if [ "$attempt" -lt 10 ]; then sleep 1; fi
    done
    local _
    for _ in $(seq 1 60); do
      pg_answers && break
      sleep 0.5
    done
    if ! pg_answers; then
      log "PostgreSQL did not come up; its log follows"
      as_root tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2 || true
      exit 1
    fi
  fi
  as_postgres psql -qAtc "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kiln') THEN
        CREATE ROLE kiln LOGIN SUPERUSER PASSWORD 'kiln';
      END IF;
    END \$\$;" >/dev/null
  if [ -z "$(as_postgres psql -qAtc "SELECT 1 FROM pg_database WHERE datname = 'kiln'")" ]; then
    as_postgres createdb -O kiln kiln
  fi
  pg_kiln_ready || { log "cannot log in to PostgreSQL as kiln"; exit 1; }
  log "PostgreSQL is up with role and database kiln"
}

# Tools the tests run as a user would: git for repositories, curl for
# downloads by their listed URL.
ensure_tools() {
  local missing=()
  for tool in git curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# The group of the users an agent running as root gives its tasks on the
# process executor (docs/agents.md, Isolation); the agent refuses to start
# without it.
ensure_task_group() {
  if getent group kiln-task >/dev/null; then
    log "group kiln-task present"
    return
  fi
  log "creating the group kiln-task"
  as_root groupadd --system kiln-task
}

# GitHub's published webhook payloads and REST description, which the
# forge tests feed to the server and check status requests against.
KILN_NPM_FIXTURES=${KILN_NPM_FIXTURES:-/opt/kiln-test/npm}
ensure_forge_fixtures() {
  if [ -f "$KILN_NPM_FIXTURES/node_modules/@octokit/webhooks-examples/api.github.com/index.json" ] \
    && [ -f "$KILN_NPM_FIXTURES/node_modules/@octokit/openapi/generated/api.github.com.json" ]; then
    log "GitHub webhook examples and OpenAPI description present"
    return
  fi
  command -v npm >/dev/null 2>&1 || { log "installing npm"; apt_install npm; }
  log "installing @octokit/webhooks-examples and @octokit/openapi into $KILN_NPM_FIXTURES"
  as_root mkdir -p "$KILN_NPM_FIXTURES"
  as_root npm install --silent --no-audit --no-fund --prefix "$KILN_NPM_FIXTURES" \
    @octokit/webhooks-examples@7.6.1 @octokit/openapi@23.0.2 >&2
}

ensure_tools
ensure_chromium
ensure_task_group
ensure_docker
ensure_busybox_image
ensure_postgres
ensure_openapi_validator
ensure_schemathesis
ensure_forge_fixtures
