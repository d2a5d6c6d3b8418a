"""The Docker Engine as labstack needs it: reachable, with room on disk, images it can describe and build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors

from labstack.errors import ExitCode, LabstackError
from labstack.matrix import GB


def connect() -> docker.DockerClient:
    """A client for the daemon DOCKER_HOST points at (default: the local socket), or a one-line error."""
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as err:
        reason = str(err).split("(", 1)[0].strip() or type(err).__name__
        raise LabstackError(
            f"cannot reach the Docker daemon ({reason}): start it (`sudo scripts/install-docker.sh` installs and "
            "starts Docker Engine on Debian) or set DOCKER_HOST",
            code=ExitCode.NO_DOCKER,
        ) from None
    return client


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
