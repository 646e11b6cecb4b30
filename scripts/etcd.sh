#!/usr/bin/env bash
# Make etcd available for bench/raftstore.py (Debian/Ubuntu, as root): installs Debian's etcd-server package
# from the machine's own apt sources when `etcd` is missing. Idempotent; quick when etcd is there already.
# The package's own service is not used (the benchmark starts its own members on free loopback ports with
# temporary data directories); where systemd runs, the package may start it: we leave it as it is.
# Prints the etcd version at the end.
set -euo pipefail

log() { echo "etcd: $*" >&2; }

if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    log "etcd is missing and this is not root: apt-get install etcd-server (or run as root)"
    exit 1
  fi
  log "installing etcd-server (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi
etcd --version | head -1
