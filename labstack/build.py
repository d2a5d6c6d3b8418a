"""`invoke build`: checks first, then the base, the wheels and the images, then a summary table."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from labstack import ROOT
from labstack.base import check_pinned, ensure_base
from labstack.engine import GB, check_disk, connect, image_or_none
from labstack.errors import LabstackError
from labstack.lock import read_lock
from labstack.matrix import Image, Matrix
from labstack.wheelhouse import cache_dir, ensure_wheels, sync_dir

# Already-built images still need room for a rebuild of their last layers.
REBUILD_GB = 0.5


@dataclass(frozen=True)
class BuildResult:
    image: Image
    size_bytes: int
    seconds: float


def git_output(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def oci_labels(image: Image, base_ref: str) -> dict[str, str]:
    """OCI annotations; `created` is the commit time, not the clock, so an unchanged tree rebuilds the same."""
    return {
        "org.opencontainers.image.title": image.repository,
        "org.opencontainers.image.description": f"{image.framework} {image.version} ({image.variant}) by labstack",
        "org.opencontainers.image.version": image.tag,
        "org.opencontainers.image.revision": git_output("rev-parse", "HEAD") or "unknown",
        "org.opencontainers.image.created": git_output("log", "-1", "--format=%cI") or "unknown",
        "org.opencontainers.image.licenses": "MIT",
        "org.opencontainers.image.base.name": base_ref,
        **image.labels(),
    }


def image_build_args(matrix: Matrix, image: Image, base_ref: str) -> dict[str, str]:
    return {
        "BASE_IMAGE": base_ref,
        "VARIANT": image.variant,
        "LABSTACK_CUDA": image.cuda or "",
        "LABSTACK_CUDA_PATTERNS": ",".join(matrix.cuda_package_patterns),
    }


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


def context_dir(name: str) -> Path:
    """The staging folder of a build context, per checkout: two clones building at once must not swap each
    other's scripts/."""
    checkout = hashlib.sha256(str(ROOT.resolve()).encode()).hexdigest()[:8]
    return cache_dir() / "contexts" / f"{name}-{checkout}"


def stage_context(image: Image, wheels: dict[str, Path]) -> Path:
    """A build context holding exactly this image's wheels (hard links), its lockfile, the in-image install
    helpers and scripts/. BuildKit only transfers what changed since the last build of the same context."""
    context = context_dir(image.name)
    sync_dir(context / "wheels", {path.name: path for path in wheels.values()})
    sync_dir(context / "image", {p.name: p for p in (ROOT / "images" / "common").iterdir() if p.is_file()})
    shutil.copy2(image.lockfile, context / "requirements.lock")
    shutil.rmtree(context / "scripts", ignore_errors=True)
    shutil.copytree(ROOT / "scripts", context / "scripts", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return context


def needed_bytes(client: docker.DockerClient, images: list[Image]) -> float:
    return sum((REBUILD_GB if image_or_none(client, i.ref) else i.disk_gb) * GB for i in images)


def build_images(
    matrix: Matrix, images: list[Image], *, refresh_base: bool = False, from_image: str | None = None
) -> list[BuildResult]:
    """Build `images` after checking everything that can be checked before the first layer."""
    if from_image:
        check_pinned(from_image, matrix.suite)
    client = connect()
    pins = {image.name: read_lock(image, matrix) for image in images}
    check_disk(client, needed_bytes(client, images), cache_dir())
    wheels = {image.name: ensure_wheels(pins[image.name], matrix) for image in images}
    base_ref = ensure_base(client, matrix, refresh=refresh_base, from_image=from_image)
    results = []
    for image in images:
        context = stage_context(image, wheels[image.name])
        seconds = docker_build(
            dockerfile=image.dockerfile,
            context=context,
            tag=image.ref,
            build_args=image_build_args(matrix, image, base_ref),
            labels=oci_labels(image, base_ref),
        )
        built = client.images.get(image.ref)
        results.append(BuildResult(image, int(built.attrs["Size"]), seconds))
    return results
