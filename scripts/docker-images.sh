#!/usr/bin/env bash
# Build the images the container tests and docker-compose.yml use, without any container registry:
#
#   shoal-task:local    a busybox image made from the machine's busybox-static (sh, sleep, httpd, nc, ...)
#   shoal-pybase:local  Debian bookworm (debootstrap --variant=minbase) with python3 and python3-venv, from
#                       the Debian mirror of this machine's apt sources (or SHOAL_DEBIAN_MIRROR)
#   shoal:local         the repository's Dockerfile FROM shoal-pybase, its Python dependencies installed
#                       offline from wheels this script downloads with the host's pip (no network in the build)
#
# Usage: scripts/docker-images.sh [task|base|app|all]   (default: all; app implies base)
# Prints SHOAL_TASK_IMAGE=..., SHOAL_BASE_IMAGE=..., SHOAL_IMAGE=... on stdout; progress goes to stderr.
#
# Everything is keyed by a hash of its inputs, so a warm run only checks tags (about a second):
#   image tags        shoal-task:<key>, shoal-pybase:<key>, shoal:<key> (then also tagged :local)
#   SHOAL_CACHE_DIR   (/var/cache/shoal) pybase-<key>.tar — the debootstrap rootfs (the slow part, ~2.5 min
#                     cold), wheels-<key>/ — the wheelhouse; both survive a wiped engine
# Older keys' images are removed after a build. Runs are serialized with a lock in the cache directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VERSION=1  # bump to rebuild everything
SUITE=bookworm  # Python 3.11, which the wheels are fetched for
PY_VERSION=3.11
CACHE=${SHOAL_CACHE_DIR:-/var/cache/shoal}
export DOCKER_BUILDKIT=0  # the classic builder: no buildx needed (Debian's docker.io has none)

log() { echo "docker-images: $*" >&2; }
hash_of() { sha256sum | cut -c1-16; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

WORK=$(mktemp -d /tmp/shoal-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Remove images of `repo` tagged with another key than `keep` (old builds; `:local` already moved to the new
# one, so the old image loses its last tag and goes), ignoring ones still in use by containers.
prune() {
  local repo=$1 keep=$2 tag
  docker image ls "$repo" --format '{{.Tag}}' | while read -r tag; do
    if [ "$tag" != "$keep" ] && [[ "$tag" =~ ^[0-9a-f]{16}$ ]]; then  # only this script's key tags
      docker rmi "$repo:$tag" >/dev/null 2>&1 || true
    fi
  done
}

# ---- task image: busybox-static ------------------------------------------------------------------------
task_image() {
  local busybox=/bin/busybox key rootfs applet
  [ -x "$busybox" ] || { log "no $busybox: install busybox-static"; exit 1; }
  key=$( { echo "task v$VERSION"; sha256sum "$busybox"; } | hash_of)
  if ! have_image "shoal-task:$key"; then
    log "building shoal-task:$key from $busybox"
    rootfs=$WORK/task
    mkdir -p "$rootfs"/{bin,etc,tmp,root,www,var/run}
    chmod 1777 "$rootfs/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    for applet in $("$busybox" --list); do
      [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    tar -C "$rootfs" --numeric-owner -c . | docker import --change 'CMD ["sh"]' \
      --change 'ENV PATH=/bin' - "shoal-task:$key" >/dev/null
  fi
  docker tag "shoal-task:$key" shoal-task:local
  prune shoal-task "$key"
  echo "SHOAL_TASK_IMAGE=shoal-task:local"
}

# ---- Python base image: debootstrap --------------------------------------------------------------------
# The first `deb` source of the main Debian archive in this machine's apt configuration (deb822 .sources
# files and one-line .list files); security and -updates suites are skipped.
debian_mirror() {
  if [ -n "${SHOAL_DEBIAN_MIRROR:-}" ]; then
    echo "$SHOAL_DEBIAN_MIRROR"
    return
  fi
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )[a-z]+( |$)/ && uris != "") { split(uris, u, " "); print u[1]; exit } types = suites = uris = "" }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
      END { flush() }' "$f"
  done | head -n1 | grep . && return
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i+1) ~ /^[a-z]+$/) { print $i; exit } }' \
    | grep . && return
  log "no Debian mirror found in the apt sources; set SHOAL_DEBIAN_MIRROR"
  exit 1
}

base_image() {
  local mirror arch include key tar rootfs
  command -v debootstrap >/dev/null || { log "debootstrap missing: run scripts/docker-engine.sh"; exit 1; }
  mirror=$(debian_mirror)
  arch=$(dpkg --print-architecture)
  include=python3,python3-venv,ca-certificates
  key=$(echo "base v$VERSION $SUITE minbase $include $arch $mirror" | hash_of)
  BASE_KEY=$key
  if ! have_image "shoal-pybase:$key"; then
    tar=$CACHE/pybase-$key.tar
    if [ ! -f "$tar" ]; then
      log "debootstrap $SUITE ($include) from $mirror — a few minutes, cached in $tar"
      rootfs=$WORK/pybase
      debootstrap --variant=minbase --include="$include" --arch="$arch" "$SUITE" "$rootfs" "$mirror" \
        > "$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
      tar -C "$rootfs" --numeric-owner -cf "$tar.tmp" .
      mv "$tar.tmp" "$tar"
      find "$CACHE" -maxdepth 1 -name 'pybase-*.tar' ! -name "pybase-$key.tar" -delete
    fi
    log "importing shoal-pybase:$key"
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' "$tar" "shoal-pybase:$key" >/dev/null
  fi
  docker tag "shoal-pybase:$key" shoal-pybase:local
  prune shoal-pybase "$key"
  echo "SHOAL_BASE_IMAGE=shoal-pybase:local"
}

# ---- the wheelhouse: the dependencies of pyproject.toml as wheels for the image's Python ---------------
wheelhouse() {
  local py deps arch key dir platforms=() v
  py=python3
  [ -x "$ROOT/.venv/bin/python" ] && py=$ROOT/.venv/bin/python
  deps=$("$py" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")
  arch=$(uname -m)
  key=$( { echo "wheels v$VERSION $PY_VERSION $arch"; echo "$deps"; } | hash_of)
  WHEELS_KEY=$key
  dir=$CACHE/wheels-$key
  if [ ! -f "$dir/.complete" ]; then
    log "downloading the dependency wheels for Python $PY_VERSION into $dir"
    for v in $(seq 17 40); do platforms+=(--platform "manylinux_2_${v}_${arch}"); done
    platforms+=(--platform "manylinux2014_${arch}")
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$deps" > "$WORK/requirements.txt"
    if ! "$py" -m pip download --quiet --dest "$dir" --only-binary=:all: --python-version "$PY_VERSION" \
         --implementation cp --abi "cp${PY_VERSION/./}" "${platforms[@]}" -r "$WORK/requirements.txt" \
         > "$WORK/pip.log" 2>&1; then
      grep -v "is ignored: it is neither a file nor a directory" "$WORK/pip.log" >&2
      log "pip download failed"
      exit 1
    fi
    touch "$dir/.complete"
    find "$CACHE" -maxdepth 1 -name 'wheels-*' ! -name "wheels-$key" -exec rm -rf {} +
  fi
  WHEELS_DIR=$dir
}

# ---- the shoal image -----------------------------------------------------------------------------------
app_image() {
  local key ctx
  base_image >/dev/null
  wheelhouse
  key=$( { echo "app v$VERSION base $BASE_KEY wheels $WHEELS_KEY"; cat Dockerfile .dockerignore pyproject.toml;
           find shoal services agent -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum; } | hash_of)
  if ! have_image "shoal:$key"; then
    log "building shoal:$key (Dockerfile FROM shoal-pybase:$BASE_KEY, wheels offline)"
    ctx=$WORK/context
    mkdir -p "$ctx/docker/wheelhouse"
    cp Dockerfile .dockerignore pyproject.toml "$ctx/"
    tar --exclude=__pycache__ --exclude='*.pyc' -c shoal services agent | tar -x -C "$ctx"
    cp "$WHEELS_DIR"/*.whl "$ctx/docker/wheelhouse/"
    docker build --quiet --build-arg "BASE_IMAGE=shoal-pybase:$BASE_KEY" \
      --build-arg "PIP_INSTALL_ARGS=--no-index --find-links /wheelhouse" -t "shoal:$key" "$ctx" >/dev/null \
      2> >(grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e buildx -e environment-variable -e '^ *$' -e 'Install the' >&2)
  fi
  docker tag "shoal:$key" shoal:local
  prune shoal "$key"
  echo "SHOAL_BASE_IMAGE=shoal-pybase:local"
  echo "SHOAL_IMAGE=shoal:local"
}

docker info >/dev/null 2>&1 || { log "no Docker engine answers: run scripts/docker-engine.sh"; exit 1; }
what=${1:-all}
start=$(date +%s)
case "$what" in
  task) task_image ;;
  base) base_image ;;
  app) app_image ;;
  all) task_image; app_image ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
log "$what ready in $(( $(date +%s) - start ))s"
