"""The Docker Engine as labstack needs it: reachable, with room on disk, and images it can describe."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import docker.errors

from labstack.errors import LabstackError

GB = 1000**3


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
            code=3,
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
                code=4,
            )


def image_or_none(client: docker.DockerClient, ref: str):
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
