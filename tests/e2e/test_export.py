"""`invoke export` on the real daemon: the small OS image with labstack's labels, tagged as this module's torch-cpu
lab image under a private name (LABSTACK_REPOSITORY points the matrix at it), exported, then checked by tools
that are not ours (sha256sum, skopeo), exported again, damaged, interrupted and squeezed onto a small disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from labstack import ROOT
from labstack.cluster import export as export_module
from labstack.cluster.export import export_image
from labstack.engine import connect
from labstack.errors import ExitCode, LabstackError
from labstack.matrix import GB, REPOSITORY_VARIABLE, load_matrix
from tests.invoking import assert_one_line_failure, run_invoke

NAMESPACE = f"lsexport-{uuid.uuid4().hex[:8]}"  # the matrix's images under a private name: never a lab's own
TORCH_CPU = load_matrix().image("torch", "cpu")
REF = f"{NAMESPACE}/torch:{TORCH_CPU.tag}-lab"
NAME = f"torch-{TORCH_CPU.tag}-lab"
# The session's own label makes the image's ID this module's alone, so removing it afterwards touches no one else's.
LABELS = {
    "org.opencontainers.image.title": "labstack/torch (export test)",
    "labstack.framework": "torch",
    "labstack.variant": "cpu",
    "labstack.test.session": NAMESPACE,
}
COMMAND_TIMEOUT = 120
SMALL_DISK_MB = 64  # the OS image is about 180 MB


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_invoke(*args, env={REPOSITORY_VARIABLE: NAMESPACE, **(env or {})}, timeout=COMMAND_TIMEOUT)


def checked_by_sha256sum(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "-c", f"{NAME}.tar.sha256"], cwd=folder, capture_output=True, text=True)


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", "inspect", *args], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def lab_image(os_image):
    """The OS image with LABELS, tagged as this module's torch-cpu lab image; removed afterwards."""
    client = connect()
    dockerfile = io.BytesIO(f"FROM {os_image}\n".encode())
    image, _ = client.images.build(fileobj=dockerfile, tag=REF, labels=LABELS, rm=True)
    try:
        yield image
    finally:
        client.images.remove(image.id, force=True)


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a 64 MB tmpfs: too small for the OS image's archive."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_MB}m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_the_archive_is_the_image_by_id_as_sha256sum_and_skopeo_read_it(lab_image, tmp_path):
    exported = export_image(connect(), REF, tmp_path, say=lambda text: None)
    archive = tmp_path / f"{NAME}.tar"
    assert exported.archive == archive and exported.status == "exported"
    checked = checked_by_sha256sum(tmp_path)
    assert checked.returncode == 0 and checked.stdout.strip() == f"{NAME}.tar: OK", checked.stderr

    inspected = json.loads(skopeo(f"docker-archive:{archive}"))
    assert inspected["Labels"] == LABELS
    manifest = json.loads(skopeo("--raw", f"docker-archive:{archive}"))
    assert manifest["config"]["digest"] == lab_image.id
    config = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", f"docker-archive:{archive}"], capture_output=True, check=True
    ).stdout
    assert f"sha256:{hashlib.sha256(config).hexdigest()}" == lab_image.id

    record = json.loads((tmp_path / f"{NAME}.json").read_text())
    assert record["ref"] == REF and record["image_id"] == lab_image.id and record["labels"] == LABELS
    assert record["archive_bytes"] == archive.stat().st_size == exported.size_bytes
    assert record["sha256"] == exported.sha256 and record["labstack_revision"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file stayed"


def test_invoke_export_then_again_says_unchanged_and_leaves_the_archive(lab_image, tmp_path):
    out = tmp_path / "exports"
    first = invoke("export", "--image", "torch-cpu", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "exported" in first.stdout and f"1 exported, 0 unchanged, in {out}" in first.stdout
    assert f"sha256sum -c {NAME}.tar.sha256" in first.stdout
    assert f"apptainer build {NAME}.sif docker-archive:{NAME}.tar" in first.stdout
    assert f"dockerd://{REF}" in first.stdout
    archive = out / f"{NAME}.tar"
    written = archive.stat().st_mtime_ns

    time.sleep(0.05)  # a rewrite would now show in the mtime even on a coarse clock
    again = invoke("export", "--image", "torch-cpu", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout and f"0 exported, 1 unchanged, in {out}" in again.stdout
    assert "exporting" not in again.stderr
    assert archive.stat().st_mtime_ns == written
    assert checked_by_sha256sum(out).returncode == 0


def test_a_damaged_archive_is_exported_again_not_called_unchanged(lab_image, tmp_path):
    """The image is still here, so a good archive is one export away: writing it again is what a user wants from
    a damaged copy (refusing would leave them deleting files by hand); the line above the table says why."""
    client = connect()
    first = export_image(client, REF, tmp_path, say=lambda text: None)
    with first.archive.open("r+b") as handle:
        handle.seek(first.size_bytes // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))
    assert checked_by_sha256sum(tmp_path).returncode != 0
    said: list[str] = []
    again = export_image(client, REF, tmp_path, say=said.append)
    assert again.status == "exported"
    assert any("does not match the sha256 recorded at its export" in line for line in said), said
    assert checked_by_sha256sum(tmp_path).returncode == 0
    assert json.loads((tmp_path / f"{NAME}.json").read_text())["sha256"] == again.sha256


def partial_files(folder: Path) -> list[Path]:
    found = []
    for path in folder.glob(".*.partial"):
        try:
            if path.stat().st_size > 0:
                found.append(path)
        except FileNotFoundError:
            pass  # renamed or removed between the listing and the stat
    return found


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [
        (signal.SIGINT, ExitCode.INTERRUPTED, "interrupted"),
        (signal.SIGTERM, ExitCode.TERMINATED, "terminated (SIGTERM)"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_an_export_stopped_mid_save_leaves_no_partial_archive(lab_image, tmp_path, signum, code, said):
    out = tmp_path / "exports"
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "export", "--image", "torch-cpu", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, REPOSITORY_VARIABLE: NAMESPACE},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out.is_dir() and partial_files(out)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the export ended before it could be stopped mid-save"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == f"labstack: {said}" and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in out.iterdir()) == [], "the stopped export left files"


def test_a_disk_too_small_for_the_image_is_one_line_with_the_numbers(lab_image, small_disk):
    result = invoke("export", "--image", "torch-cpu", "--out", str(small_disk))
    needed = lab_image.attrs["Size"] * 1.1 / GB
    assert_one_line_failure(
        result, ExitCode.NO_DISK, f"not enough disk space to export {REF}", f"needs about {needed:.2f} GB free at "
        f"{small_disk}", "plus 10%", f"{SMALL_DISK_MB * 2**20 / GB:.2f} GB are free", "--out",
    )  # fmt: skip
    assert list(small_disk.iterdir()) == []


def test_a_disk_that_fills_during_the_save_leaves_nothing(lab_image, small_disk, monkeypatch):
    """What the space check cannot foresee (another writer on the same disk), here by making it see room."""
    monkeypatch.setattr(export_module, "free_bytes", lambda path: (path, 1 << 40))
    with pytest.raises(LabstackError) as caught:
        export_image(connect(), REF, small_disk, say=lambda text: None)
    assert caught.value.code == ExitCode.NO_DISK and "filled up" in str(caught.value)
    assert list(small_disk.iterdir()) == []


def test_invoke_export_of_an_image_not_built_here_names_the_build(lab_image, tmp_path):
    result = invoke("export", "--image", "tensorflow-cpu", "--out", str(tmp_path / "exports"))
    assert_one_line_failure(
        result, ExitCode.FAILED, f"{NAMESPACE}/tensorflow:", "is not built here",
        "`invoke build --framework tensorflow --variant cpu --layer lab`", "export builds nothing",
    )  # fmt: skip
    assert not (tmp_path / "exports").exists()


def test_invoke_export_with_nothing_built_here_is_one_line(tmp_path):
    result = invoke("export", "--out", str(tmp_path / "exports"), env={REPOSITORY_VARIABLE: f"{NAMESPACE}-none"})
    assert_one_line_failure(result, ExitCode.FAILED, "no labstack lab image is built here", "invoke build --layer lab")
