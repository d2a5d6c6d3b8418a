#!/usr/bin/env bash
# Install and start Docker Engine + Compose v2 + buildx on Debian, idempotently.
#
# Debian bookworm packages Engine 20.10 (docker.io) but only Compose v1; trixie packages Compose v2 and
# buildx as static Go binaries that run on bookworm. We fetch those two .debs with a private apt state so the
# system's own sources and lists stay untouched, and unpack only the plugin binaries.
# Usage: sudo scripts/install-docker.sh [--no-start]
set -euo pipefail

start=1
[[ "${1:-}" == "--no-start" ]] && start=0

log() { printf '[install-docker] %s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

plugin_dir=/usr/local/lib/docker/cli-plugins
updated=0
apt_update_once() { [[ $updated -eq 1 ]] || { as_root apt-get update -qq; updated=1; }; }

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Docker Engine (docker.io)"
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io iptables ca-certificates >/dev/null
fi

if ! docker compose version >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
  log "installing Compose v2 and buildx plugins from Debian trixie"
  # Reuse the mirror this machine already uses for Debian packages.
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(LABEL)' 'Identifier: Packages' 2>/dev/null \
           | awk '$2 == "Debian" {print $1; exit}')
  mirror=${mirror%/}
  [[ -n "$mirror" ]] || { log "no Debian mirror found in /etc/apt sources"; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$work/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
            -o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0")
  as_root apt-get "${apt_opts[@]}" update -qq
  (cd "$work/debs" && as_root apt-get "${apt_opts[@]}" download -qq docker-compose docker-buildx)
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  as_root mkdir -p "$plugin_dir"
  for bin in docker-compose docker-buildx; do
    src=$(find "$work/root" -type f -name "$bin" -perm -u+x | head -n1)
    [[ -n "$src" ]] || { log "$bin not found in the downloaded package"; exit 1; }
    as_root install -m 0755 "$src" "$plugin_dir/$bin"
  done
fi

if [[ $start -eq 1 ]] && ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  as_root mkdir -p /var/log
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; tail -n 20 /var/log/dockerd.log >&2; exit 1; }
fi

log "$(docker version --format 'Engine {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo 'Engine not running')"
log "$(docker compose version 2>/dev/null || echo 'Compose v2 missing')"
