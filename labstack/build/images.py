"""`invoke build`: checks first, then the base, the wheels and the images."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import docker

from labstack import ROOT, payload
from labstack.build.base import check_pinned, ensure_base
from labstack.build.lock import read_lock
from labstack.build.wheelhouse import ensure_wheels, sync_dir
from labstack.engine import check_disk, connect, docker_build, image_or_none
from labstack.matrix import GB, Image, Matrix
from labstack.paths import cache_dir, git_output, revision

# Already-built images still need room for a rebuild of their last layers.
REBUILD_GB = 0.5
# What runs inside `docker build` beside the payload: the offline install step (the layers have their own).
INSTALL_HELPER = ROOT / "images" / "common" / "install.sh"


@dataclass(frozen=True)
class BuildResult:
    image: Image
    size_bytes: int
    seconds: float
    layer: str = "framework"
    added_bytes: int | None = None  # a layer's size on top of the image below it

    @property
    def tag(self) -> str:
        return self.image.tag if self.layer == "framework" else f"{self.image.tag}-{self.layer}"


def oci_labels(image: Image, base_ref: str) -> dict[str, str]:
    """OCI annotations; `created` is the commit time, not the clock, so an unchanged tree rebuilds the same."""
    return {
        "org.opencontainers.image.title": image.repository,
        "org.opencontainers.image.description": f"{image.framework} {image.version} ({image.variant}) by labstack",
        "org.opencontainers.image.version": image.tag,
        "org.opencontainers.image.revision": revision() or "unknown",
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
        # The tag's version: payload/manifest.py fails the build if the installed framework is another release.
        "LABSTACK_FRAMEWORK_VERSION": image.version,
    }


def context_dir(name: str) -> Path:
    """The staging folder of a build context, per checkout: two clones building at once must not swap each
    other's payload."""
    checkout = hashlib.sha256(str(ROOT.resolve()).encode()).hexdigest()[:8]
    return cache_dir() / "contexts" / f"{name}-{checkout}"


def payload_files() -> dict[str, Path]:
    """The payload programs, by file name: what the images get (no caches, nothing of the host's own tools)."""
    return {f"{name}.py": payload.path(name) for name in payload.programs()}


def stage_context(image: Image, wheels: dict[str, Path]) -> Path:
    """A build context holding exactly this image's wheels (hard links), its lockfile, the install helper and
    the payload. BuildKit only transfers what changed since the last build of the same context."""
    context = context_dir(image.name)
    sync_dir(context / "wheels", {path.name: path for path in wheels.values()})
    sync_dir(context / "image", {INSTALL_HELPER.name: INSTALL_HELPER})
    sync_dir(context / "payload", payload_files())
    shutil.copy2(image.lockfile, context / "requirements.lock")
    return context


def needed_bytes(client: docker.DockerClient, images: list[Image]) -> float:
    return sum((REBUILD_GB if image_or_none(client, i.ref) else i.disk_gb) * GB for i in images)


def build_images(
    matrix: Matrix, images: list[Image], *, refresh_base: bool = False, from_image: str | None = None
) -> list[BuildResult]:
    """Build `images` after checking everything that can be checked before the first layer."""
    if from_image:
        check_pinned(from_image, matrix.suite)
    # The locks first, Docker second: a stale lock or a framework not at the matrix's version needs no daemon.
    pins = {image.name: read_lock(image, matrix) for image in images}
    client = connect()
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
