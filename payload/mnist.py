#!/usr/bin/env python3
"""MNIST in the standard IDX format: download, generate, verify and read it. Standard library only.

    python3 mnist.py download DIR     the four archives from a public mirror, checked against SHA256 below
    python3 mnist.py generate DIR     a small, learnable stand-in dataset (class patterns + noise), for tests
    python3 mnist.py verify DIR       check the files against the table below or the folder's SHA256SUMS
    python3 mnist.py record DIR       write SHA256SUMS for files you supplied yourself (after checking them)

Runs on the host (`invoke data`) and inside the images (/opt/labstack/payload/mnist.py, imported by train.py).
A folder is accepted when each of the four files (plain or .gz) matches the published checksums of the real
MNIST archives, or the SHA256SUMS sidecar that `generate` and `record` write next to them. Every failure is one
line on stderr starting `labstack:` and exit code 2 (bad data) or 1 (download failed).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import struct
import sys
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the published archives (the same bytes on every mirror; also in TensorFlow Datasets' checksums).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
SUMS = "SHA256SUMS"
DOWNLOAD_TIMEOUT = 60
IDX_UBYTE = 0x08
SIDE = 28


class DataError(Exception):
    """Bad or missing data: `str(err)` says what is wrong and what to do."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Split:
    images: bytes  # n * 28 * 28 unsigned bytes, row-major
    labels: bytes  # n unsigned bytes, 0..9
    count: int


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    source: str  # "mnist" (matches the published checksums) or "SHA256SUMS" (recorded sidecar)
    fingerprint: str  # sha256 over the four files' sha256, identifies the data a checkpoint was trained on


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encode_idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, type, ndim), big-endian dimensions, then the data."""
    expected = 1
    for dim in dims:
        expected *= dim
    if len(payload) != expected:
        raise ValueError(f"{len(payload)} bytes do not fill dimensions {dims}")
    return bytes((0, 0, IDX_UBYTE, len(dims))) + struct.pack(f">{len(dims)}I", *dims) + payload


def decode_idx(data: bytes, name: str) -> tuple[tuple[int, ...], bytes]:
    """Dimensions and payload of an IDX file of unsigned bytes; DataError naming the file if it is not one."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name} is not an IDX file (bad magic number): replace it (`invoke data --download`)")
    if data[2] != IDX_UBYTE:
        raise DataError(f"{name} holds IDX type 0x{data[2]:02x}, not unsigned bytes (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated (shorter than its IDX header)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = 1
    for dim in dims:
        expected *= dim
    if len(data) - header != expected:
        raise DataError(f"{name} is truncated or padded: dimensions {dims} need {expected} bytes after the header")
    return dims, data[header:]


def find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_sums(folder: Path) -> dict[str, str]:
    """{file name: sha256} of the folder's SHA256SUMS (`sha256sum` format); DataError if it is damaged."""
    path = folder / SUMS
    if not path.is_file():
        return {}
    sums = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = "\0"
        if "\0" in line:
            raise DataError(
                f"{path} line {number} is not text (a damaged or binary file): delete it, then run `invoke data "
                "--record` for files you supplied (or `invoke data --generate` again); MNIST's own archives need none"
            )
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[name.strip()] = digest
    return sums


def _checked(folder: Path) -> tuple[dict[str, Path], str, str, tuple[Split, Split]]:
    """The four files of `folder` checked against their checksums, then read: (paths, source, fingerprint,
    (train, test))."""
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist: create it, or set DATA_DIR to the folder with MNIST")
    paths = {key: find_file(folder, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise DataError(
            f"no MNIST in {folder} (missing {', '.join(missing)}): run `invoke data --download` (needs internet), "
            "`invoke data --generate` (a small stand-in for tests), or train with --synthetic"
        )
    sums = read_sums(folder)
    source = None
    digests = []
    for path in paths.values():
        assert path is not None
        digest = sha256_file(path)
        digests.append(digest)
        if MNIST_SHA256.get(path.name) == digest:
            this = "mnist"
        elif sums.get(path.name) == digest:
            this = SUMS
        elif path.name in sums or path.name in MNIST_SHA256:
            raise DataError(
                f"{path} does not match its checksum (corrupt or replaced): delete it and download or generate again"
            )
        else:
            raise DataError(
                f"{path} has no known checksum: if you supplied these files yourself, record them with "
                f"`invoke data --record` (or `python3 payload/mnist.py record {folder}`)"
            )
        source = this if source in (None, this) else "mixed"
    fingerprint = hashlib.sha256("".join(digests).encode()).hexdigest()
    found = {k: p for k, p in paths.items() if p is not None}
    # A checksum proves the bytes are the ones recorded, not that they decode: a SHA256SUMS written by hand
    # (`sha256sum *.gz`) over a damaged archive passes it. Reading them here makes verify say what training would.
    splits = (_split(found["train_images"], found["train_labels"]), _split(found["test_images"], found["test_labels"]))
    return found, source or "?", fingerprint, splits


def verify(folder: Path) -> tuple[dict[str, Path], str, str]:
    """The four files of `folder`, checked by checksum and read: ({key: path}, source, fingerprint). Raises
    DataError with the fix."""
    paths, source, fingerprint, _ = _checked(folder)
    return paths, source, fingerprint


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            return gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as err:
            reason = str(err).removeprefix("Error -3 while decompressing data: ")
            raise DataError(
                f"{path} is a damaged gzip file ({reason}): replace it with a good copy (`invoke data --download` "
                "for MNIST), and run `invoke data --record` again if its checksum came from you"
            ) from None
    return path.read_bytes()


def _split(images_path: Path, labels_path: Path) -> Split:
    image_dims, images = decode_idx(_read_bytes(images_path), images_path.name)
    label_dims, labels = decode_idx(_read_bytes(labels_path), labels_path.name)
    if len(image_dims) != 3 or image_dims[1:] != (SIDE, SIDE):
        raise DataError(f"{images_path.name} holds images of shape {image_dims[1:]}, expected {SIDE}x{SIDE}")
    if len(label_dims) != 1 or label_dims[0] != image_dims[0]:
        raise DataError(f"{labels_path.name} has {label_dims[0]} labels for {image_dims[0]} images")
    if labels and max(labels) > 9:
        raise DataError(f"{labels_path.name} holds a label {max(labels)} outside 0..9")
    return Split(images, labels, image_dims[0])


def load(folder: Path) -> Dataset:
    """Verify, then read the four IDX files of `folder`."""
    _, source, fingerprint, (train, test) = _checked(folder)
    return Dataset(train=train, test=test, source=source, fingerprint=fingerprint)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def record(folder: Path) -> Path:
    """Check that the four plain or .gz files are valid IDX, then write their SHA256SUMS."""
    paths = {key: find_file(folder, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise DataError(f"cannot record {folder}: missing {', '.join(missing)}")
    _split(paths["train_images"], paths["train_labels"])  # type: ignore[arg-type]
    _split(paths["test_images"], paths["test_labels"])  # type: ignore[arg-type]
    lines = "".join(f"{sha256_file(p)}  {p.name}\n" for p in paths.values() if p is not None)
    write_atomic(folder / SUMS, lines.encode())
    return folder / SUMS


def class_patterns(seed: int) -> list[list[float]]:
    """One fixed 28x28 pattern per class: a few random strokes, so classes differ but are not trivially linear."""
    rng = random.Random(seed)
    patterns = []
    for _ in range(10):
        canvas = [0.0] * (SIDE * SIDE)
        for _ in range(3):
            x, y = rng.randrange(6, 22), rng.randrange(6, 22)
            dx, dy = rng.choice([(1, 0), (0, 1), (1, 1), (1, -1)])
            for step in range(-6, 7):
                px, py = x + dx * step, y + dy * step
                if 0 <= px < SIDE and 0 <= py < SIDE:
                    canvas[py * SIDE + px] = 1.0
        patterns.append(canvas)
    return patterns


def generate_split(count: int, rng: random.Random, patterns: list[list[float]], noise: float) -> tuple[bytes, bytes]:
    images = bytearray(count * SIDE * SIDE)
    labels = bytearray(count)
    for index in range(count):
        label = rng.randrange(10)
        labels[index] = label
        shift_x, shift_y = rng.randint(-2, 2), rng.randint(-2, 2)
        brightness = rng.uniform(0.6, 1.0)
        pattern = patterns[label]
        base = index * SIDE * SIDE
        for y in range(SIDE):
            sy = y - shift_y
            for x in range(SIDE):
                sx = x - shift_x
                ink = pattern[sy * SIDE + sx] * brightness if 0 <= sx < SIDE and 0 <= sy < SIDE else 0.0
                value = ink + rng.gauss(0.0, noise)
                images[base + y * SIDE + x] = max(0, min(255, int(value * 255)))
    return bytes(images), bytes(labels)


def generate(folder: Path, train: int = 3000, test: int = 1000, seed: int = 0, noise: float = 0.25) -> Path:
    """Write a learnable stand-in for MNIST (distinct class patterns, shifted, plus noise) and its SHA256SUMS."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    patterns = class_patterns(seed)
    for (images_key, labels_key), count in (
        (("train_images", "train_labels"), train),
        (("test_images", "test_labels"), test),
    ):
        images, labels = generate_split(count, rng, patterns, noise)
        write_atomic(folder / FILES[images_key], encode_idx((count, SIDE, SIDE), images))
        write_atomic(folder / FILES[labels_key], encode_idx((count,), labels))
    return record(folder)


def download(folder: Path, mirrors: tuple[str, ...] = MIRRORS, timeout: float = DOWNLOAD_TIMEOUT) -> list[Path]:
    """Fetch the four archives over HTTPS (Python's default CA store, or SSL_CERT_FILE) and check them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, expected in MNIST_SHA256.items():
        target = folder / name
        if target.is_file() and sha256_file(target) == expected:
            written.append(target)
            continue
        errors = []
        for mirror in mirrors:
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as response:
                    data = response.read()
            except (urllib.error.URLError, OSError) as err:
                errors.append(f"{mirror}: {getattr(err, 'reason', err)}")
                continue
            if hashlib.sha256(data).hexdigest() != expected:
                errors.append(f"{mirror}: checksum mismatch")
                continue
            write_atomic(target, data)
            written.append(target)
            break
        else:
            raise DataError(
                f"could not download {name} ({'; '.join(errors)}): offline? On a machine with internet get "
                f"{', '.join(MNIST_SHA256)} from {mirrors[0]} and copy them into {folder}, or use "
                "`invoke data --generate` / train with --synthetic",
                code=1,
            )
    return written


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["download", "generate", "verify", "record"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=3000, help="generate: training samples (default: 3000)")
    parser.add_argument("--test", type=int, default=1000, help="generate: test samples (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="generate: random seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        if args.action == "download":
            download(args.folder)
            print(f"MNIST downloaded and verified in {args.folder}")
        elif args.action == "generate":
            generate(args.folder, args.train, args.test, args.seed)
            print(f"generated {args.train}+{args.test} learnable stand-in samples (not MNIST) in {args.folder}")
        elif args.action == "record":
            print(f"recorded {record(args.folder)}")
        else:
            _, source, fingerprint = verify(args.folder)
            print(f"{args.folder}: four IDX files verified against {source} (fingerprint {fingerprint[:12]})")
    except DataError as err:
        print(f"labstack: {err}", file=sys.stderr)
        return err.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
