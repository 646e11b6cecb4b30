#!/usr/bin/env bash
# Make a Docker engine available on this machine (Debian/Ubuntu, as root), for the container tests of CI:
#   1. install what is missing from the machine's own apt sources: docker.io, docker-compose (1.29),
#      busybox-static (the task image) and debootstrap (the Python base image);
#   2. start dockerd when nothing answers on /var/run/docker.sock (log: /var/log/shoal-dockerd.log). Its
#      storage driver is SHOAL_DOCKERD_STORAGE_DRIVER when set, else dockerd's own choice (overlay2 where the
#      filesystem allows), falling back to vfs if dockerd will not start with it.
# Idempotent and quick when everything is there already. Prints one line about the engine at the end.
set -euo pipefail

log() { echo "docker-engine: $*" >&2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]} and not root: install them (apt-get install ${missing[*]}) or run as root"
    exit 1
  fi
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

engine_up() { docker info >/dev/null 2>&1; }

wait_engine() {
  local pid=$1
  for _ in $(seq 1 120); do
    engine_up && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

start_dockerd() {
  # setsid: dockerd outlives this script (and CI's process group) like a system service would.
  setsid dockerd "$@" >>/var/log/shoal-dockerd.log 2>&1 < /dev/null &
  local pid=$!
  if wait_engine "$pid"; then
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

if ! engine_up; then
  if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and not root: start dockerd yourself"
    exit 1
  fi
  if [ -e /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid  # a stale pid file from a dead dockerd would stop a new one
  fi
  if [ -n "${SHOAL_DOCKERD_STORAGE_DRIVER:-}" ]; then
    log "starting dockerd --storage-driver $SHOAL_DOCKERD_STORAGE_DRIVER"
    start_dockerd --storage-driver "$SHOAL_DOCKERD_STORAGE_DRIVER" || { log "dockerd did not start; see /var/log/shoal-dockerd.log"; exit 1; }
  else
    log "starting dockerd"
    if ! start_dockerd; then
      log "dockerd did not start with its default storage driver; retrying with vfs"
      start_dockerd --storage-driver vfs || { log "dockerd did not start; see /var/log/shoal-dockerd.log"; exit 1; }
    fi
  fi
fi

log "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null), storage driver $(docker info --format '{{.Driver}}' 2>/dev/null), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
