"""Real bad inputs for the fault tests, shared by tests/unit and tests/e2e: MNIST files whose gzip body is damaged,
a binary SHA256SUMS, and a small real filesystem (a tmpfs, root only: mount(8)) with a ballast file that leaves a
chosen number of bytes free, so a test decides which write is the one that fails."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from labstack import payload

mnist = payload.load("mnist")


def gzipped_stand_in(folder: Path) -> Path:
    """The generated stand-in as the four .gz files and their SHA256SUMS, as a lab copies MNIST in."""
    mnist.generate(folder, train=300, test=100, seed=3)
    for stem in mnist.FILES.values():
        (folder / f"{stem}.gz").write_bytes(gzip.compress((folder / stem).read_bytes()))
        (folder / stem).unlink()
    mnist.record(folder)
    return folder


def damage_body(path: Path) -> None:
    """Flip bytes in the deflate stream behind the 10-byte gzip header: the header still reads as gzip."""
    data = bytearray(path.read_bytes())
    for index in range(20, 220):
        data[index] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(zlib.error):  # the damage the tests are about, as gzip meets it
        gzip.decompress(bytes(data))


def sha256sum_file(folder: Path) -> None:
    """SHA256SUMS as `sha256sum *.gz > SHA256SUMS` writes it: it vouches for whatever bytes are there."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(folder.glob("*.gz"))]
    (folder / mnist.SUMS).write_text("".join(lines))


def damaged_data(folder: Path) -> Path:
    """The stand-in with train-images' gzip body damaged, and a SHA256SUMS that vouches for the damaged bytes."""
    gzipped_stand_in(folder)
    damage_body(folder / "train-images-idx3-ubyte.gz")
    sha256sum_file(folder)
    return folder


# Invalid UTF-8 first, then every byte value: what a sidecar overwritten by something else looks like.
BINARY_SUMS = b"\xff\xfe\x00\x9c" + bytes(range(256)) * 3

BALLAST = "ballast"


@contextlib.contextmanager
def small_tmpfs(folder: Path, size_bytes: int, owner: tuple[int, int] | None = None) -> Iterator[Path]:
    """`folder` as a tmpfs of `size_bytes` (owned by `owner`, uid and gid, if given); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode=0755" + (f",uid={owner[0]},gid={owner[1]}" if owner else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True, timeout=30)


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def leave_free(folder: Path, room: int) -> Path:
    """Fill `folder`'s filesystem with a ballast file until `room` bytes (rounded down to whole pages) are left."""
    ballast = folder / BALLAST
    with ballast.open("ab") as handle:
        handle.write(b"\0" * max(0, free_bytes(folder) - room))
    assert free_bytes(folder) <= room, f"{free_bytes(folder)} bytes still free, wanted {room}"
    return ballast
