"""The OS layer and the shared base image.

No registry is reachable where labstack is developed, so `FROM debian:...` cannot pull. The OS root
filesystem is built from Debian packages with mmdebstrap (using the host's apt mirror) and `docker import`ed
as labstack/os:<suite>-<date>; images/base/Dockerfile then adds the venv and user on top as
labstack/base:<suite>-<date>. Users who can pull may start from a Debian image pinned by digest instead.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker

from labstack import ROOT
from labstack.engine import docker_build
from labstack.errors import BadInput, LabstackError
from labstack.matrix import REPOSITORY_PREFIX, Matrix
from labstack.paths import cache_dir

OS_REPOSITORY = f"{REPOSITORY_PREFIX}/os"
BASE_REPOSITORY = f"{REPOSITORY_PREFIX}/base"
# Documentation, manuals and translations are a tenth of a minimal Debian and nobody reads them in a container.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")


def host_debian_sources(suite: str) -> list[str]:
    """The host's apt sources for Debian (main suite, -updates, -security) as one-line entries for `suite`."""
    result = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(LABEL)", "Identifier: Packages"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = []
    for row in sorted(set(result.stdout.splitlines())):
        uri, release, *label = row.split()
        if label and label[0] in ("Debian", "Debian-Security") and release.split("-")[0] == suite:
            lines.append(f"deb {uri} {release} main")
    return lines


def build_os_rootfs(matrix: Matrix, tarball: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise LabstackError("mmdebstrap is not installed: `sudo apt-get install mmdebstrap` (it builds the OS layer)")
    command = [
        "mmdebstrap", "--variant=minbase", f"--include={','.join(matrix.packages)}",
        "--aptopt=APT::Install-Recommends \"false\"",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        matrix.suite, str(tarball), *host_debian_sources(matrix.suite),
    ]  # fmt: skip
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise LabstackError("mmdebstrap failed (see its output above): check the host's Debian mirror and proxy")


def latest_os_image(client: docker.DockerClient, suite: str) -> str | None:
    prefix = f"{OS_REPOSITORY}:{suite}-"
    tags = [t for image in client.images.list(OS_REPOSITORY) for t in image.tags if t.startswith(prefix)]
    return max(tags) if tags else None


def import_os(client: docker.DockerClient, matrix: Matrix) -> str:
    """Build the OS root filesystem and import it as labstack/os:<suite>-<YYYYMMDD>; record its packages."""
    ref = f"{OS_REPOSITORY}:{matrix.suite}-{dt.date.today():%Y%m%d}"
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        build_os_rootfs(matrix, tarball)
        repository, tag = ref.split(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=['CMD ["/bin/bash"]'])
    packages = subprocess.run(
        ["docker", "run", "--rm", ref, "dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    record = cache_dir() / "base" / f"{ref.split(':')[1]}.packages.txt"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(packages)
    print(f"imported {ref}: {len(packages.splitlines())} Debian packages, list in {record}", flush=True)
    return ref


def check_pinned(from_image: str, suite: str) -> None:
    """A pulled OS image must be pinned by digest: a tag can move under the lockfiles."""
    if not re.search(r"@sha256:[0-9a-f]{64}$", from_image):
        raise BadInput(f"--from-image {from_image} is not pinned: use a digest, e.g. debian:{suite}-slim@sha256:<hex>")


def ensure_base(
    client: docker.DockerClient,
    matrix: Matrix,
    *,
    refresh: bool = False,
    from_image: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
) -> str:
    """The base image reference for framework builds, building the OS layer first when there is none."""
    if from_image:
        check_pinned(from_image, matrix.suite)
        os_ref = from_image
        base_ref = f"{BASE_REPOSITORY}:{matrix.suite}-{from_image.rsplit(':', 1)[1][:12]}"
    else:
        os_ref = None if refresh else latest_os_image(client, matrix.suite)
        os_ref = os_ref or import_os(client, matrix)
        base_ref = f"{BASE_REPOSITORY}:{os_ref.split(':', 1)[1]}"
    docker_build(
        dockerfile=ROOT / "images" / "base" / "Dockerfile",
        context=ROOT / "images" / "base",
        tag=base_ref,
        build_args={
            "OS_IMAGE": os_ref,
            "LABSTACK_PACKAGES": " ".join(matrix.packages),
            "LABSTACK_UID": str(uid or matrix.uid),
            "LABSTACK_GID": str(gid or matrix.gid),
            "LABSTACK_USER": matrix.user,
        },
        labels={"labstack.os": os_ref},
    )
    return base_ref
