#!/usr/bin/env bash
# Set up a fresh Debian machine for labstack, idempotently.
#   scripts/bootstrap.sh          what the images and the benchmark need: Docker Engine + Compose v2 (started),
#                                 mmdebstrap for the OS layer, the OpenSSH client, and a Python venv in .venv with
#                                 labstack (README's first command: the sooner the answer, the better)
#   scripts/bootstrap.sh --full   also what deploy, clusters and the tests use: OpenSSH's server (the tests
#                                 simulate lab servers with their own sshd), Debian's docker-registry (labstack
#                                 runs its binary on loopback; the package's service stays off), Slurm and MUNGE
#                                 (the tests run a 3-node cluster of their own; the services stay off), shellcheck
#                                 and skopeo (the cluster batch scripts and image exports), iproute2, and ruff
# Uses sudo for the system packages when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

full=0
case "${1:-}" in
  "") ;;
  --full) full=1 ;;
  *) echo "usage: scripts/bootstrap.sh [--full]" >&2; exit 2 ;;
esac

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
# Docker Engine in the same apt transaction (install-docker.sh then only adds the Compose and buildx plugins).
command -v dockerd >/dev/null || need+=(docker.io iptables ca-certificates)
if ((full)); then
  [[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
  command -v ip >/dev/null || need+=(iproute2)  # the simulated lab servers' bridges
  [[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)  # labstack runs the binary with its own loopback config
  # slurm-wlm: slurmctld + slurmd + the client tools. Not slurm-wlm-emulator: that is a FrontEnd build, which
  # cannot run several slurmd (-N n1, n2, n3) on one host.
  [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd && -x /usr/bin/sbatch ]] || need+=(slurm-wlm)
  [[ -x /usr/sbin/munged ]] || need+=(munge)
  # The linter shellcheck checks the Slurm batch scripts labstack renders (pyxis and apptainer ones run only on
  # paper here); skopeo reads the image archives `invoke export` writes, as a cluster without Docker would.
  command -v shellcheck >/dev/null || need+=(shellcheck)
  command -v skopeo >/dev/null || need+=(skopeo)
fi
if ((${#need[@]})); then
  echo "[bootstrap] installing ${need[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" docker-registry "* ]]; then
    # The package starts a service on :5000 on every interface, with deletes on: labstack never uses it.
    if [[ -d /run/systemd/system ]]; then
      as_root systemctl disable --now docker-registry >/dev/null 2>&1 || true
    else
      as_root service docker-registry stop >/dev/null 2>&1 || true
      as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
    fi
  fi
  if [[ " ${need[*]} " == *" slurm-wlm "* || " ${need[*]} " == *" munge "* ]]; then
    # The tests start munged, slurmctld and the slurmds themselves, with their own key, config, ports and state
    # under a temp folder (tests/e2e/slurmcluster.py). The packages' services would use /etc/slurm and
    # /etc/munge instead, and a running system slurmd would answer on the same default ports: they stay off.
    # In CI containers policy-rc.d usually stopped them from starting already; where systemd runs they did start.
    for service in slurmctld slurmd munge; do
      if [[ -d /run/systemd/system ]]; then
        as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
      else
        as_root service "$service" stop >/dev/null 2>&1 || true
        as_root update-rc.d "$service" disable >/dev/null 2>&1 || true
      fi
    done
  fi
fi

make_venv() {
  if [[ ! -x .venv/bin/python ]]; then
    echo "[bootstrap] creating .venv" >&2
    python3 -m venv .venv
  fi
  local extras='.'
  if ((full)); then extras='.[dev]'; fi
  # --no-compile: modules are compiled when first imported instead; a fresh install is a third shorter.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -e "$extras"
  echo "[bootstrap] .venv ready" >&2
}

# The venv is made while Docker is set up (one is mostly CPU, the other downloads and dpkg): on a fresh 2-core
# machine that is about 20 s sooner to README's answer. A failed Docker set-up stops the venv too.
make_venv &
venv=$!
trap 'kill "$venv" 2>/dev/null || true' EXIT
as_root bash scripts/install-docker.sh
wait "$venv"
trap - EXIT
echo "[bootstrap] ready: .venv/bin/invoke --list" >&2
