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

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

ensure_docker
ensure_busybox_image
