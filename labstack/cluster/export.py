"""The body of `invoke export` (tasks.py only declares it): the images built here as `docker save` archives, each
with its sha256 and a JSON record, for a cluster whose nodes have no Docker (Apptainer, enroot) to build from.

An archive is written to a hidden temporary file in the same folder and renamed only once it is complete, synced
and checked, so a Ctrl-C, a SIGTERM or a full disk leaves no partial archive under the archive's name."""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from rich.console import Console
from rich.table import Table

from labstack.build.layers import LAYER_NAMES
from labstack.build.wheelhouse import sha256_file
from labstack.deploy.push import chosen_refs, existing
from labstack.engine import connect, free_bytes
from labstack.errors import BadInput, ExitCode, LabstackError, first_line
from labstack.matrix import GB, choose, load_matrix
from labstack.paths import output_folder, revision

DEFAULT_OUT = "exports"
MB = 1000**2  # the table's unit, as GB is everywhere else: an OS image is a few hundred MB
SPACE_MARGIN = 1.10  # an archive is about the image's size (its layers, uncompressed), plus tar headers and JSON
# The labels a cluster's image must keep through a conversion: what says which framework, variant and commit it is.
LABEL_PREFIXES = ("org.opencontainers.image.", "labstack.")
SIF_TOOLS = ("apptainer", "singularity")
SIF_TIMEOUT_S = 3600  # a CUDA image is about 7 GB to squash on a login node


@dataclass(frozen=True)
class Exported:
    ref: str
    image_id: str
    archive: Path
    size_bytes: int
    sha256: str
    status: str  # exported | unchanged
    seconds: float
    sif: Path | None = None


def archive_name(ref: str) -> str:
    """`labstack/torch:2.13.0-cpu-lab` -> `torch-2.13.0-cpu-lab`: the repository's last part and the tag, which is
    what tells images apart on a cluster (the namespace and any registry host stay in the record and the archive)."""
    path, _, tag = ref.rpartition(":")
    if not path or "/" in tag or "@" in ref or path == "sha256":  # sha256:... is an image ID, no name
        raise BadInput(f"cannot export {ref} by that name: give the image as REPOSITORY:TAG")
    return f"{path.rsplit('/', 1)[-1]}-{tag}"


def sha256_line(digest: str, archive: Path) -> str:
    """A line of `sha256sum` output (two spaces: text mode), naming the archive as it lies beside the checksum file,
    so `sha256sum -c NAME.tar.sha256` works from that folder wherever the folder is copied."""
    return f"{digest}  {archive.name}\n"


def archive_identity(archive: Path) -> tuple[set[str], list[str]]:
    """(digests that name the image, its RepoTags) from a `docker save` archive, read in place (no extraction):
    the config digest of its one image in manifest.json (Docker's classic store calls that the image ID), and the
    manifest digests of its index.json where it has one (Docker's containerd store calls those the image ID)."""
    try:
        with tarfile.open(archive) as tar:
            manifest = json.load(_member(tar, "manifest.json"))
            index = json.load(_member(tar, "index.json")) if "index.json" in tar.getnames() else {}
    except (OSError, tarfile.TarError, ValueError, KeyError) as err:
        raise LabstackError(f"{archive} is not a docker save archive: {err}") from None
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise LabstackError(f"{archive} holds {len(manifest)} images, not one: export each image on its own")
    # Engine 20.10 writes "<hex>.json", Engine 25 and later "blobs/sha256/<hex>"
    config = Path(str(manifest[0].get("Config", ""))).name.removesuffix(".json")
    digests = {f"sha256:{config}"} | {str(m.get("digest")) for m in index.get("manifests", [])}
    return digests, list(manifest[0].get("RepoTags") or [])


def _member(tar: tarfile.TarFile, name: str):
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(f"{name} is not a file")
    return member


def check_space(ref: str, image_bytes: int, where: Path, free: int) -> None:
    needed = image_bytes * SPACE_MARGIN
    if free < needed:
        raise LabstackError(
            f"not enough disk space to export {ref}: its archive needs about {needed / GB:.2f} GB free at {where} "
            f"(the image's {image_bytes / GB:.2f} GB plus 10%), {free / GB:.2f} GB are free; free space there or "
            "give --out a folder on a larger disk",
            code=ExitCode.NO_DISK,
        )


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stale_reason(record: dict[str, Any] | None, ref: str, image_id: str, archive: Path) -> str | None:
    """Why `archive` must be written (again), or None when it is this image's export as recorded, its bytes
    re-hashed: an archive changed or damaged since is exported again, since the image it came from is here."""
    if record is None or not archive.is_file():
        return "new"
    if record.get("ref") != ref or record.get("image_id") != image_id:
        return f"{archive.name} holds {record.get('ref')} {short_id(str(record.get('image_id')))}, not this image"
    if archive.stat().st_size != record.get("archive_bytes") or sha256_file(archive) != record.get("sha256"):
        return f"{archive.name} does not match the sha256 recorded at its export (changed or damaged since)"
    return None


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def write_atomically(path: Path, text: str) -> None:
    """A file whole or not at all (a checksum, a record, a batch script, a manifest): a reader never finds half of
    it, a failure leaves no temporary file, and an OSError is one line naming the folder."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failure(err, path.parent, f"writing {path.name}") from None
        raise


def write_failure(err: OSError, folder: Path, what: str) -> LabstackError:
    """An OSError of writing into `folder` as the one line it ends in: a full disk is NO_DISK, with the fix."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return LabstackError(
            f"the disk of {folder} filled up {what}: free space there or give --out a folder on a larger disk",
            code=ExitCode.NO_DISK,
        )
    return LabstackError(f"cannot write into {folder} ({what}): {err.strerror or err}")


def save_archive(chunks: Iterable[bytes], archive: Path, check: Callable[[Path], None]) -> tuple[str, int]:
    """Write `chunks` to `archive` through a hidden temporary file in its folder, hashing them as they stream; synced,
    `check`ed, then renamed. Returns (sha256, bytes). Whatever stops it (an error, a failed check, Ctrl-C, SIGTERM)
    removes the temporary file: no partial archive is left, under the archive's name or another."""
    digest, written = hashlib.sha256(), 0
    descriptor, name = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with open(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would keep the archive from the lab's other users
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
                written += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        check(partial)
        os.replace(partial, archive)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sync_folder(archive.parent)
    return digest.hexdigest(), written


def sync_folder(folder: Path) -> None:
    """The rename is on disk too, not only the archive's bytes: a power cut after `unchanged` finds what it said."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def export_image(client: docker.DockerClient, ref: str, out: Path, say: Callable[[str], None] = print) -> Exported:
    """Export one image, named REPOSITORY:TAG, into the folder `out`: NAME.tar, NAME.tar.sha256 and NAME.json, or
    `unchanged` where they already hold this image (by ID) and the archive still hashes to its recorded sha256."""
    name = archive_name(ref)
    try:
        image = client.images.get(ref)  # the ID first: the archive is checked against it after the save
    except docker.errors.ImageNotFound:
        raise LabstackError(f"{ref} is not an image here: build it first (export builds nothing)") from None
    except (docker.errors.DockerException, requests.RequestException) as err:
        raise LabstackError(f"the Docker daemon did not describe {ref}: {first_line(err)}") from None
    image_id, size = str(image.id), int(image.attrs.get("Size") or 0)
    archive, checksum, record_path = out / f"{name}.tar", out / f"{name}.tar.sha256", out / f"{name}.json"
    began = time.monotonic()
    record = read_record(record_path)
    reason = stale_reason(record, ref, image_id, archive)
    if reason is None and record is not None:
        line = sha256_line(record["sha256"], archive)
        if not checksum.is_file() or checksum.read_text() != line:
            write_atomically(checksum, line)  # the archive is right; only its checksum file went missing or astray
        seconds = round(time.monotonic() - began, 2)
        return Exported(ref, image_id, archive, record["archive_bytes"], record["sha256"], "unchanged", seconds)
    if reason != "new":
        say(f"{reason}: exporting it again")
    where, free = free_bytes(out)
    check_space(ref, size, where, free)
    say(f"exporting {ref} ({short_id(image_id)}, {size / GB:.2f} GB) to {archive}")

    def same_image(partial: Path) -> None:
        digests, tags = archive_identity(partial)
        if image_id not in digests:
            raise LabstackError(
                f"{ref} changed while it was saved (the archive holds {', '.join(sorted(digests))}, the image was "
                f"{image_id}): nothing was written; export again once nothing is building or tagging it"
            )
        if ref not in tags:
            raise LabstackError(f"the archive of {ref} names {', '.join(tags) or 'no image'}: nothing was written")

    try:
        digest, written = save_archive(image.save(named=ref), archive, same_image)
    except OSError as err:
        raise write_failure(err, out, f"while {ref} was saved, and nothing was written") from None
    except (docker.errors.DockerException, requests.RequestException) as err:
        raise LabstackError(f"docker save {ref} failed: {first_line(err)}; nothing was written") from None
    labels = dict(image.labels or {})
    write_atomically(checksum, sha256_line(digest, archive))
    record = {
        "ref": ref,
        "image_id": image_id,
        "repo_digests": list(image.attrs.get("RepoDigests") or []),
        "labels": labels,
        "archive": archive.name,
        "archive_bytes": written,
        "sha256": digest,
        "image_created": image.attrs.get("Created"),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "labstack_revision": revision() or "unknown",
    }
    write_atomically(record_path, json.dumps(record, indent=2) + "\n")
    return Exported(ref, image_id, archive, written, digest, "exported", round(time.monotonic() - began, 2))


def sif_tool() -> str | None:
    return next((tool for tool in SIF_TOOLS if shutil.which(tool)), None)


def sif_build_command(tool: str, archive: Path, sif: Path) -> list[str]:
    """How Apptainer (or SingularityCE) builds a SIF from the archive, with no Docker and no registry."""
    return [tool, "build", str(sif), f"docker-archive:{archive}"]


def sif_labels_command(tool: str, sif: Path) -> list[str]:
    return [tool, "inspect", "--labels", "--json", str(sif)]


def required_labels(labels: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in labels.items() if key.startswith(LABEL_PREFIXES)}


def missing_labels(inspected: str, wanted: dict[str, str]) -> list[str]:
    """The `wanted` labels that `apptainer inspect --labels --json` does not show with the same value."""
    try:
        found = json.loads(inspected)["data"]["attributes"]["labels"] or {}
    except (ValueError, KeyError, TypeError):
        found = {}
    return sorted(key for key, value in wanted.items() if found.get(key) != value)


def build_sif(tool: str, exported: Exported, labels: dict[str, str], say: Callable[[str], None] = print) -> Path:
    """NAME.sif beside the archive, its labstack labels read back from it. On paper only here: neither Apptainer
    nor Singularity is packaged in Debian bookworm or trixie or on PyPI, so this runs where a lab has one; its
    commands (`sif_build_command`, `sif_labels_command`) and its steps are unit-tested against a stand-in."""
    sif = exported.archive.with_suffix(".sif")
    if exported.status == "unchanged" and sif.is_file():
        return sif
    partial = sif.with_name(f".{sif.name}.partial")
    partial.unlink(missing_ok=True)
    say(f"building {sif} with {tool}")
    try:
        built = run_tool(sif_build_command(tool, exported.archive, partial))
        if built.returncode:
            raise LabstackError(f"{tool} build of {sif.name} failed: {last_words(built)}")
        inspected = run_tool(sif_labels_command(tool, partial))
        if inspected.returncode:
            raise LabstackError(f"{tool} inspect of {sif.name} failed: {last_words(inspected)}")
        missing = missing_labels(inspected.stdout, required_labels(labels))
        if missing:
            raise LabstackError(
                f"{sif.name} lost the image's labels {', '.join(missing)} in {tool}'s build: not kept; the archive "
                f"{exported.archive.name} is complete, build from it by hand or use enroot"
            )
        os.replace(partial, sif)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return sif


def run_tool(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=SIF_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise LabstackError(f"{' '.join(command[:2])} took more than {SIF_TIMEOUT_S} s: stopped") from None


def last_words(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def out_folder(out: str) -> Path:
    return output_folder("out", out, DEFAULT_OUT)


def make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"--out {folder}: cannot create that folder ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"--out {folder}: that folder is not writable for you")
    return folder


def next_commands(exported: list[Exported], folder: Path) -> list[str]:
    """What a cluster user runs next, per archive: the checksum, a SIF, and enroot's way (it imports from a
    registry, a Docker daemon or Podman, never an archive file, so the archive goes through `docker load` first)."""
    lines = [f"next: copy {folder}/ to the cluster, then in that folder:"]
    for item in exported:
        name = item.archive.name
        sif = item.archive.with_suffix(".sif").name
        sqsh = item.archive.with_suffix(".sqsh").name
        lines += [
            f"  sha256sum -c {name}.sha256",
            f"  apptainer build {sif} docker-archive:{name}",
            f"  enroot: on a machine with Docker and enroot, docker load -i {name} && enroot import -o {sqsh} "
            f"dockerd://{item.ref}",
        ]
    return lines


def print_exported(exported: list[Exported], console: Console | None = None) -> None:
    table = Table(title="labstack export")
    for column in ("image", "ID", "archive", "size", "sha256", "status"):
        # fold, not "…": the paths are what a reader copies from the table
        table.add_column(column, justify="right" if column == "size" else "left", overflow="fold")
    for item in exported:
        archive = f"{item.archive}" + (f"\n{item.sif}" if item.sif else "")
        size = f"{item.size_bytes / MB:.0f} MB"
        table.add_row(item.ref, short_id(item.image_id), archive, size, item.sha256[:12], item.status)
    (console or Console()).print(table)


def export(image: str | None = None, layer: str = "lab", out: str = DEFAULT_OUT) -> list[Exported]:
    """Export the chosen images (as `invoke push` chooses them) into `out`, then print the table and what to run
    on the cluster. Every option is checked before the daemon is asked, and the daemon before anything is written."""
    (layer,) = choose("layer", layer, LAYER_NAMES, many=False)
    folder = out_folder(out)
    wanted = chosen_refs(load_matrix(), image, layer)
    client = connect()
    present = existing(client, wanted, bool(image), layer, verb="export")
    make_folder(folder)
    console = Console(stderr=True)

    def say(text: str) -> None:
        console.print(text, soft_wrap=True, markup=False, highlight=False)

    tool = sif_tool()
    exported: list[Exported] = []
    started = time.monotonic()
    for ref, local in present:
        item = export_image(client, ref, folder, say)
        if tool:
            item = replace(item, sif=build_sif(tool, item, dict(local.labels or {}), say))
        exported.append(item)
    print_exported(exported)
    for line in next_commands(exported, folder):
        print(line)
    done = sum(item.status == "exported" for item in exported)
    seconds = time.monotonic() - started
    print(f"{done} exported, {len(exported) - done} unchanged, in {folder} ({seconds:.1f} s)")
    return exported
