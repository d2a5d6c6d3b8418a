"""The host-side wheelhouse: wheels downloaded with the host's pip configuration, verified against the
lockfile hashes, then hard-linked into a per-image build context that the Dockerfile bind-mounts offline."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

from labstack.build.lock import Pin, committed_hashes, restore, shown_path
from labstack.errors import LabstackError
from labstack.matrix import Matrix
from labstack.paths import cache_dir


def wheelhouse_dir() -> Path:
    return cache_dir() / "wheels"


def manylinux_platforms(matrix: Matrix) -> list[str]:
    """`x86_64-manylinux_2_36` -> manylinux_2_36_x86_64 ... manylinux_2_17_x86_64, the legacy aliases, linux."""
    arch, _, plat = matrix.python_platform.partition("-")
    glibc_minor = int(plat.rsplit("_", 1)[1])
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1)]
    return [*platforms, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]


def image_tags(matrix: Matrix) -> list[Tag]:
    """Wheel tags the image's interpreter accepts, best first."""
    python = tuple(int(x) for x in matrix.python_version.split("."))
    platforms = manylinux_platforms(matrix)
    return list(cpython_tags(python, platforms=platforms)) + list(compatible_tags(python, platforms=platforms))


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def find_wheels(pins: list[Pin], matrix: Matrix, wheelhouse: Path) -> tuple[dict[str, Path], list[Pin]]:
    """Map each pin to its verified wheel in the wheelhouse; return (found, missing).

    A wheel whose name and version match a pin but whose hash is not in the lockfile means the wheelhouse was
    tampered with (or filled from another source): that is an error, never silently replaced.
    """
    rank = {tag: i for i, tag in enumerate(image_tags(matrix))}
    candidates: dict[tuple[str, Version], list[tuple[int, Path]]] = {}
    for path in wheelhouse.glob("*.whl") if wheelhouse.is_dir() else []:
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        best = min((rank[t] for t in tags if t in rank), default=None)
        if best is not None:
            candidates.setdefault((name, version), []).append((best, path))
    found: dict[str, Path] = {}
    missing: list[Pin] = []
    for pin in pins:
        files = sorted(candidates.get((pin.name, Version(pin.version)), []))
        if not files:
            missing.append(pin)
            continue
        for _, path in files:
            digest = sha256_file(path)
            if digest not in pin.hashes:
                raise LabstackError(mismatch_message(pin, path, digest))
            remember(path, digest)
        found[pin.name] = files[0][1]
    return found, missing


# One file per wheel that once matched a lockfile's hash (pip verified it on download, or a build found it): its
# digest then. A wheel that still has that digest but no longer matches the lock tells an edited lock apart from
# a replaced wheel.
VERIFIED = ".verified"


def remember(path: Path, digest: str) -> None:
    record = path.parent / VERIFIED / path.name
    try:
        if record.is_file() and record.read_text().strip() == digest:
            return
        record.parent.mkdir(exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}")
        tmp.write_text(digest + "\n")
        os.replace(tmp, record)
    except OSError:
        pass  # a read-only wheelhouse still builds; only the message of a later mismatch is less sure


def recorded(path: Path) -> str | None:
    try:
        return (path.parent / VERIFIED / path.name).read_text().strip() or None
    except OSError:
        return None


def mismatch_message(pin: Pin, path: Path, digest: str) -> str:
    """A wheel whose hash is not in the lock: blame the lock when it was edited (git's copy of the lock names this
    wheel's hash, or the wheel is unchanged since it matched the lock), else the wheel."""
    committed = committed_hashes(pin)
    if committed != pin.hashes:  # the lock's hashes for this pin differ from git's, or git cannot tell
        if committed is not None and digest in committed:
            why = f"git's copy of the lock names its hash ({path.name})"
        elif recorded(path) == digest:
            why = f"{path.name} is the wheel that matched this lock when it was downloaded"
        else:
            why = None
        if why:
            lock = shown_path(pin.lockfile) if pin.lockfile else "the lockfile"
            return (
                f"{lock}: the --hash of {pin.name}=={pin.version} does not match the wheel the index serves, "
                f"{why}: the lock was probably edited: {restore(lock)}{pin.relock}"
            )
    return (
        f"wheel {path} does not match the hash in the lockfile (tampered or from another source): "
        f"delete it and run the build again to download a verified copy"
    )


def download(pins: list[Pin], matrix: Matrix, wheelhouse: Path, extra_index: str | None = None) -> None:
    """Download wheels for exactly these pins with the host's pip (its index, find-links, proxy and CA), plus
    the extra index the matrix names for them (PyTorch's CPU index for torchvision +cpu)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(pin.requirement_line() + "\n" for pin in pins))
        platform_args = [arg for plat in manylinux_platforms(matrix) for arg in ("--platform", plat)]
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:",
            "--progress-bar", "on", "--python-version", matrix.python_version, "--implementation", "cp",
            *platform_args, "--dest", str(wheelhouse), "--requirement", str(requirements),
        ]  # fmt: skip
        if extra_index:
            command += ["--extra-index-url", extra_index]
        print(f"downloading {len(pins)} wheels into {wheelhouse}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            raise LabstackError(
                f"pip could not download {len(pins)} wheels into {wheelhouse}: see pip's message above "
                "(offline? set the host's pip index/find-links, or copy a wheelhouse there)"
            )


def ensure_wheels(
    pins: list[Pin], matrix: Matrix, wheelhouse: Path | None = None, extra_index: str | None = None
) -> dict[str, Path]:
    """Every pinned wheel, verified by hash, downloading only what is missing."""
    wheelhouse = wheelhouse or wheelhouse_dir()
    found, missing = find_wheels(pins, matrix, wheelhouse)
    if missing:
        download(missing, matrix, wheelhouse, extra_index)
        found, missing = find_wheels(pins, matrix, wheelhouse)
        if missing:
            names = ", ".join(f"{p.name}=={p.version}" for p in missing)
            raise LabstackError(f"no wheel for the image's Python/platform was found for: {names}")
    return found


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if target.stat().st_ino == source.stat().st_ino:
            return
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def sync_dir(target: Path, files: dict[str, Path]) -> None:
    """Make `target` hold exactly `files` (name -> source), hard-linked where the filesystem allows."""
    target.mkdir(parents=True, exist_ok=True)
    for stale in set(os.listdir(target)) - set(files):
        path = target / stale
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for name, source in files.items():
        link_or_copy(source, target / name)
