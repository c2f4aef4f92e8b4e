#!/usr/bin/env bash
# A Docker engine on a machine with no container registry, as ../docker-ci.md (shared notes)
# describes: install docker.io + debootstrap, start dockerd in a scratch directory without
# iptables or a bridge, and make the base image local/debian:bookworm (with this machine's CA
# certificates). Idempotent: a running engine and an existing base image are reused.
#
#   eval "$(.ci/docker-engine.sh start)"   # prints: export DOCKER_HOST=unix://...
#   .ci/docker-engine.sh stop
#
# Everything but the export line goes to stderr. DOCKER_CI_DIR picks the scratch directory.
set -euo pipefail

W=${DOCKER_CI_DIR:-/tmp/keras-serve-docker}
SOCK="unix://$W/docker.sock"
BASE_IMAGE=local/debian:bookworm
# Bump when make_base_image changes: an older local base image is then rebuilt.
BASE_REVISION=2

log() { echo "docker-engine: $*" >&2; }
dock() { docker -H "$SOCK" "$@"; }

install_tools() {
  if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    return
  fi
  log "installing docker.io and debootstrap from the Debian archive"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io debootstrap >&2
}

running() {
  [[ -f "$W/dockerd.pid" ]] && kill -0 "$(cat "$W/dockerd.pid")" 2>/dev/null \
    && dock info >/dev/null 2>&1
}

start_daemon() {
  if running; then
    log "dockerd already running (pid $(cat "$W/dockerd.pid"), $SOCK)"
    return
  fi
  mkdir -p "$W"
  log "starting dockerd in $W (log: $W/dockerd.log)"
  # Detached and with its own stdio, so that $(...) around this script does not wait for it.
  setsid dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --data-root "$W/data" --exec-root "$W/exec" -H "$SOCK" --pidfile "$W/dockerd.pid" \
    </dev/null >"$W/dockerd.log" 2>&1 &
  for _ in $(seq 1 120); do
    if dock info >/dev/null 2>&1; then
      log "dockerd is up"
      return
    fi
    sleep 0.5
  done
  tail -n 20 "$W/dockerd.log" >&2
  log "dockerd did not answer within 60 s"
  exit 1
}

debian_mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri=$(awk '/^deb / && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# Slim like debian:bookworm-slim: no docs, man pages or translations (now, or from packages
# installed later in image builds), no apt caches in image layers.
slim_rootfs() {
  local root=$1
  # Never let an empty or wrong argument touch this machine's own files.
  if [[ -z "$root" || "$(realpath "$root")" == "/" || ! -x "$root/usr/bin/dpkg" ]]; then
    log "refusing to slim '$root': not a debootstrap tree"
    exit 1
  fi
  printf '%s\n' \
    'path-exclude=/usr/share/doc/*' \
    'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' \
    'path-exclude=/usr/share/info/*' \
    'path-exclude=/usr/share/locale/*' \
    'path-include=/usr/share/locale/locale.alias' \
    >"$root/etc/dpkg/dpkg.cfg.d/slim"
  local clean='rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true'
  printf '%s\n' \
    "DPkg::Post-Invoke { \"$clean\"; };" \
    "APT::Update::Post-Invoke { \"$clean\"; };" \
    'Dir::Cache::pkgcache "";' \
    'Dir::Cache::srcpkgcache "";' \
    >"$root/etc/apt/apt.conf.d/docker-clean"
  find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  find "$root/usr/share/man" "$root/usr/share/info" "$root/var/lib/apt/lists" \
    "$root/var/cache/apt" -mindepth 1 -not -type d -delete
}

make_base_image() {
  local revision
  revision=$(dock image inspect --format '{{ index .Config.Labels "keras-serve.base-revision" }}' \
    "$BASE_IMAGE" 2>/dev/null || true)
  if [[ "$revision" == "$BASE_REVISION" ]]; then
    log "base image $BASE_IMAGE exists"
    return
  fi
  local mirror rootfs="$W/rootfs"
  mirror=$(debian_mirror)
  log "debootstrap --variant=minbase bookworm from $mirror"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$W/debootstrap.log" 2>&1 \
    || { tail -n 20 "$W/debootstrap.log" >&2; exit 1; }
  # Outbound HTTPS here may be re-signed by a local proxy: pip in the build needs these.
  mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # The same archive (and updates) as this machine's apt.
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  slim_rootfs "$rootfs"
  tar -C "$rootfs" -c . | dock import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change "LABEL keras-serve.base-revision=$BASE_REVISION" \
    - "$BASE_IMAGE" >&2
  rm -rf "$rootfs"
  log "made base image $BASE_IMAGE"
}

stop_daemon() {
  if [[ -f "$W/dockerd.pid" ]]; then
    local pid
    pid=$(cat "$W/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping dockerd (pid $pid)"
      kill "$pid"
      for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
    fi
    rm -f "$W/dockerd.pid"
  fi
  if mountpoint -q "$W/exec/netns/default" 2>/dev/null; then
    umount "$W/exec/netns/default" || true
  fi
}

case "${1:-start}" in
  start)
    install_tools
    start_daemon
    make_base_image
    echo "export DOCKER_HOST=$SOCK"
    ;;
  stop)
    stop_daemon
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
