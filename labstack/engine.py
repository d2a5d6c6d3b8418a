"""The Docker Engine as labstack needs it: reachable, with room on disk, images it can describe and build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors

from labstack.errors import ExitCode, LabstackError, first_line
from labstack.matrix import GB

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
INSTALL_FIX = "`sudo scripts/install-docker.sh` installs and starts Docker Engine on Debian"


def connect() -> docker.DockerClient:
    """A client for the daemon DOCKER_HOST points at (default: the local socket), or a one-line error."""
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as err:
        raise LabstackError(daemon_problem(err), code=ExitCode.NO_DOCKER) from None
    return client


def daemon_problem(err: BaseException, environ: Mapping[str, str] = os.environ) -> str:
    """Why the daemon cannot be reached, in words, with the fix for that reason: the socket's permissions (the
    docker group), no socket (Docker is not running), or a DOCKER_HOST that does not answer (named)."""
    text = f"{err} {err.__context__ or ''}"
    given = environ.get("DOCKER_HOST")
    address = given or DEFAULT_SOCKET
    socket = address.removeprefix("unix://") if address.startswith("unix://") else None
    at = f"DOCKER_HOST={given}" if given else socket
    head = f"cannot reach the Docker daemon at {at}"
    if "PermissionError" in text or "Permission denied" in text:
        return (
            f"{head}: permission denied on the socket {socket or address}: add yourself to the docker group "
            "(`sudo usermod -aG docker $USER`, then log in again) or run the task with sudo"
        )
    if socket and ("FileNotFoundError" in text or "No such file" in text):
        if given:
            return f"{head}: no such socket, so no daemon listens there: start that daemon, or fix or unset DOCKER_HOST"
        return f"{head}: no such socket, so Docker is not running: {INSTALL_FIX} (or `sudo systemctl start docker`)"
    if "ConnectionRefused" in text or "Connection refused" in text:
        fix = "start that daemon, or fix or unset DOCKER_HOST" if given else f"start Docker ({INSTALL_FIX})"
        return f"{head}: connection refused (nothing answers there): {fix}"
    if "timed out" in text.lower():
        fix = "check that daemon, or fix or unset DOCKER_HOST" if given else "check that Docker is not hung"
        return f"{head}: it did not answer in time: {fix}"
    reason = " ".join(first_line(err).split())
    fix = "fix or unset DOCKER_HOST" if given else f"start it ({INSTALL_FIX})"
    return f"{head} ({reason}): {fix}"


def free_bytes(path: Path) -> tuple[Path, int]:
    """Free space on the filesystem of `path`, or of its nearest readable parent (/var/lib/docker is 0710)."""
    for candidate in [path, *path.parents]:
        try:
            return candidate, shutil.disk_usage(candidate).free
        except OSError:
            continue
    raise LabstackError(f"cannot read free disk space at {path}")


def check_disk(client: docker.DockerClient, needed_bytes: float, cache: Path) -> None:
    """Fail early when Docker's data root (images, build cache) or the wheel cache lacks room."""
    root = Path(client.info().get("DockerRootDir", "/var/lib/docker"))
    for place in (root, cache):
        where, free = free_bytes(place)
        if free < needed_bytes:
            raise LabstackError(
                f"not enough disk space: the requested images need about {needed_bytes / GB:.1f} GB free at "
                f"{where}, {free / GB:.1f} GB are free; free space (`docker system prune`, `docker builder "
                "prune`) or build fewer images (--framework/--variant)",
                code=ExitCode.NO_DISK,
            )


def image_or_none(client: docker.DockerClient, ref: str):
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def docker_build(
    dockerfile: Path, context: Path, tag: str, build_args: dict[str, str], labels: dict[str, str]
) -> float:
    """Run `docker build` with BuildKit, streaming its progress; return the seconds it took."""
    command = ["docker", "build", "--file", str(dockerfile), "--tag", tag]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        command += ["--label", f"{key}={value}"]
    if not sys.stdout.isatty():
        command += ["--progress", "plain"]
    command.append(str(context))
    print("$ " + " ".join(command[:6]) + f" ... {context}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, env={**os.environ, "DOCKER_BUILDKIT": "1"}, check=False)
    if result.returncode != 0:
        raise LabstackError(f"docker build of {tag} failed (exit {result.returncode}): see the build log above")
    return time.monotonic() - started
