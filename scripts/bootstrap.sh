#!/usr/bin/env bash
# Set up a fresh Debian machine for labstack, idempotently: Docker Engine + Compose v2 (started), mmdebstrap
# for the OS layer, OpenSSH (the tests simulate lab servers with their own sshd; validate reaches hosts through
# ssh), Debian's docker-registry (deploy serves images to lab servers from its own registry process on
# loopback; the package's service is disabled) and a Python venv in .venv with labstack and its test tools.
# Usage: scripts/bootstrap.sh   (uses sudo for the system packages when not run as root)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ip >/dev/null || need+=(iproute2)  # the simulated lab servers' bridges
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
new_registry=false
[[ -x /usr/bin/docker-registry ]] || { need+=(docker-registry); new_registry=true; }
if ((${#need[@]})); then
  echo "[bootstrap] installing ${need[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The package's own service starts at once, serving :5000 on ALL interfaces; labstack runs the binary itself with
# a loopback config, so the service is stopped and disabled right after installing, where systemd runs it.
if $new_registry && [[ -d /run/systemd/system ]]; then
  as_root systemctl disable --now --quiet docker-registry
fi

as_root bash scripts/install-docker.sh

if [[ ! -x .venv/bin/python ]]; then
  echo "[bootstrap] creating .venv" >&2
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "[bootstrap] ready: .venv/bin/invoke --list" >&2
