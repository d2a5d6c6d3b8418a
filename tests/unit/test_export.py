"""`invoke export` without Docker: archive names, what a docker save archive says it holds, the checksum file, when an
export is `unchanged`, the space check, the Apptainer commands (on paper here), and the export itself against a
fake daemon whose image changes under the save."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from labstack.cluster import export as export_module
from labstack.cluster.export import (
    archive_identity,
    archive_name,
    build_sif,
    check_space,
    export_image,
    missing_labels,
    next_commands,
    required_labels,
    save_archive,
    sha256_line,
    sif_build_command,
    sif_labels_command,
    stale_reason,
    write_atomically,
)
from labstack.errors import BadInput, ExitCode, LabstackError
from labstack.matrix import GB
from tests.invoking import assert_one_line_failure, run_invoke

CONFIG = "a6ac9a4108e76292d45e260954f4f64d5535dbc64097f3250ebadccd1f59852c"
IMAGE_ID = f"sha256:{CONFIG}"
OTHER_ID = "sha256:" + "b" * 64
REF = "lsexport/torch:2.13.0-cpu-lab"


def docker_archive(files: dict[str, object]) -> bytes:
    """A tar like `docker save` writes, holding `files` (JSON documents by name) and nothing else."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, document in files.items():
            data = json.dumps(document).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_archive(path: Path, files: dict[str, object]) -> Path:
    path.write_bytes(docker_archive(files))
    return path


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("labstack/torch:2.13.0-cpu-lab", "torch-2.13.0-cpu-lab"),
        ("labstack/tensorflow:2.21.0-cuda12.9-lab", "tensorflow-2.21.0-cuda12.9-lab"),
        ("127.0.0.1:5000/labstack/torch:2.13.0-cpu", "torch-2.13.0-cpu"),
        ("labstack/os:bookworm-20261127", "os-bookworm-20261127"),
        ("busybox:1", "busybox-1"),
    ],
)
def test_an_archive_is_named_by_the_repositorys_last_part_and_the_tag(ref, name):
    assert archive_name(ref) == name


@pytest.mark.parametrize(
    "ref", ["busybox", "127.0.0.1:5000/labstack/torch", "labstack/torch@sha256:" + "a" * 64, IMAGE_ID[:19]]
)
def test_an_image_without_a_tag_cannot_be_exported_by_that_name(ref):
    with pytest.raises(BadInput, match="REPOSITORY:TAG"):
        archive_name(ref)


@pytest.mark.parametrize(
    "config", [f"{CONFIG}.json", f"blobs/sha256/{CONFIG}"], ids=["engine-20.10", "engine-25-and-later"]
)
def test_the_archives_config_digest_is_read_from_its_manifest_without_extracting(tmp_path, config):
    archive = write_archive(tmp_path / "a.tar", {"manifest.json": [{"Config": config, "RepoTags": [REF]}]})
    assert archive_identity(archive) == ({IMAGE_ID}, [REF])
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]


def test_a_containerd_store_archive_also_names_its_manifest_digest(tmp_path):
    manifest_digest = "sha256:" + "c" * 64
    archive = write_archive(
        tmp_path / "a.tar",
        {
            "manifest.json": [{"Config": f"blobs/sha256/{CONFIG}", "RepoTags": [REF]}],
            "index.json": {"manifests": [{"digest": manifest_digest}]},
        },
    )
    digests, _ = archive_identity(archive)
    assert digests == {IMAGE_ID, manifest_digest}


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"manifest.json": [{"Config": "a.json"}, {"Config": "b.json"}]}, "holds 2 images"),
        ({"index.json": {}}, "not a docker save archive"),
    ],
)
def test_an_archive_that_is_not_one_saved_image_is_refused(tmp_path, files, words):
    archive = write_archive(tmp_path / "a.tar", files)
    with pytest.raises(LabstackError, match=words):
        archive_identity(archive)


def test_a_file_that_is_no_tar_is_refused(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(LabstackError, match="not a docker save archive"):
        archive_identity(tmp_path / "a.tar")


def test_the_checksum_file_is_what_sha256sum_checks(tmp_path):
    archive = tmp_path / "torch-2.13.0-cpu-lab.tar"
    archive.write_bytes(b"an archive")
    line = sha256_line(hashlib.sha256(b"an archive").hexdigest(), archive)
    assert line == f"{hashlib.sha256(b'an archive').hexdigest()}  torch-2.13.0-cpu-lab.tar\n"
    (tmp_path / f"{archive.name}.sha256").write_text(line)
    checked = subprocess.run(["sha256sum", "-c", f"{archive.name}.sha256"], cwd=tmp_path, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    archive.write_bytes(b"an archivf")
    assert subprocess.run(["sha256sum", "-c", f"{archive.name}.sha256"], cwd=tmp_path, capture_output=True).returncode


def recorded(archive: Path, ref: str = REF, image_id: str = IMAGE_ID) -> dict:
    data = archive.read_bytes()
    return {"ref": ref, "image_id": image_id, "archive_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_the_same_image_with_its_archive_intact_is_unchanged(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"x" * 1000)
    assert stale_reason(recorded(archive), REF, IMAGE_ID, archive) is None


def test_no_record_or_no_archive_is_a_new_export(tmp_path):
    archive = tmp_path / "a.tar"
    assert stale_reason(None, REF, IMAGE_ID, archive) == "new"
    archive.write_bytes(b"x")
    record = recorded(archive)
    assert stale_reason(None, REF, IMAGE_ID, archive) == "new"
    archive.unlink()
    assert stale_reason(record, REF, IMAGE_ID, archive) == "new"


@pytest.mark.parametrize(("ref", "image_id"), [(REF, OTHER_ID), ("labstack/torch:2.13.0-cpu-lab", IMAGE_ID)])
def test_another_image_or_another_name_is_exported_again(tmp_path, ref, image_id):
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"x" * 1000)
    reason = stale_reason(recorded(archive), ref, image_id, archive)
    assert reason is not None and "not this image" in reason


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_an_archive_changed_since_its_export_is_not_unchanged(tmp_path, damage):
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"x" * 1000)
    record = recorded(archive)
    data = bytearray(archive.read_bytes())
    if damage == "flip":
        data[500] ^= 0x01  # same size: only the re-hash finds it
    else:
        del data[-1]
    archive.write_bytes(bytes(data))
    reason = stale_reason(record, REF, IMAGE_ID, archive)
    assert reason is not None and "does not match the sha256" in reason


def test_the_space_check_wants_the_image_size_plus_ten_percent():
    image_bytes = 2 * GB
    check_space(REF, image_bytes, Path("/exports"), int(2.2 * GB) + 1)
    with pytest.raises(LabstackError) as caught:
        check_space(REF, image_bytes, Path("/exports"), int(2.19 * GB))
    message = str(caught.value)
    assert caught.value.code == ExitCode.NO_DISK
    assert "2.20 GB free at /exports" in message and "2.19 GB are free" in message and "--out" in message
    assert "\n" not in message


def test_a_save_that_is_interrupted_leaves_no_file(tmp_path):
    def chunks():
        yield b"x" * 100
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_archive(chunks(), tmp_path / "a.tar", lambda partial: None)
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_fails_its_check_leaves_no_file(tmp_path):
    def refuse(partial: Path) -> None:
        assert partial.parent == tmp_path and partial.name.startswith(".a.tar.")  # beside it, hidden
        raise LabstackError("changed")

    with pytest.raises(LabstackError, match="changed"):
        save_archive([b"x" * 100], tmp_path / "a.tar", refuse)
    assert list(tmp_path.iterdir()) == []


def test_a_save_hashes_what_it_writes_and_others_can_read_it(tmp_path):
    digest, written = save_archive([b"ab", b"cd"], tmp_path / "a.tar", lambda partial: None)
    assert (digest, written) == (hashlib.sha256(b"abcd").hexdigest(), 4)
    assert (tmp_path / "a.tar").read_bytes() == b"abcd"
    assert (tmp_path / "a.tar").stat().st_mode & 0o777 == 0o644


def test_a_checksum_file_that_fills_the_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    real = Path.write_text

    def full(self, text, *args, **kwargs):
        real(self, text[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(LabstackError) as caught:
        write_atomically(tmp_path / "a.tar.sha256", "0" * 64 + "  a.tar\n")
    assert caught.value.code == ExitCode.NO_DISK
    assert f"the disk of {tmp_path} filled up writing a.tar.sha256" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_checksum_file_in_a_folder_that_is_gone_is_one_line(tmp_path):
    with pytest.raises(LabstackError, match=r"cannot write into .*gone \(writing a.json\): No such file"):
        write_atomically(tmp_path / "gone" / "a.json", "{}")


def test_apptainer_builds_the_sif_from_the_archive_and_reads_its_labels_back():
    archive, sif = Path("exports/torch-2.13.0-cpu-lab.tar"), Path("exports/.torch-2.13.0-cpu-lab.sif.partial")
    assert sif_build_command("apptainer", archive, sif) == [
        "apptainer", "build", "exports/.torch-2.13.0-cpu-lab.sif.partial",
        "docker-archive:exports/torch-2.13.0-cpu-lab.tar",
    ]  # fmt: skip
    assert sif_labels_command("singularity", sif) == [
        "singularity", "inspect", "--labels", "--json", "exports/.torch-2.13.0-cpu-lab.sif.partial",
    ]  # fmt: skip


LABELS = {
    "labstack.framework": "torch",
    "org.opencontainers.image.revision": "297b77b",
    "maintainer": "someone",
}


def test_the_labels_a_sif_must_keep_are_labstacks_and_the_oci_ones():
    assert required_labels(LABELS) == {"labstack.framework": "torch", "org.opencontainers.image.revision": "297b77b"}


@pytest.mark.parametrize(
    ("found", "missing"),
    [
        ({"labstack.framework": "torch", "org.opencontainers.image.revision": "297b77b"}, []),
        ({"labstack.framework": "torch"}, ["org.opencontainers.image.revision"]),
        ({"labstack.framework": "tensorflow", "org.opencontainers.image.revision": "297b77b"}, ["labstack.framework"]),
        (None, ["labstack.framework", "org.opencontainers.image.revision"]),
    ],
)
def test_a_sif_without_the_images_labels_is_caught(found, missing):
    inspected = json.dumps({"data": {"attributes": {"labels": found}}, "type": "container"})
    assert missing_labels(inspected, required_labels(LABELS)) == missing
    assert missing_labels("not json", {"labstack.framework": "torch"}) == ["labstack.framework"]


def fake_apptainer(tmp_path: Path, labels: dict | None) -> str:
    """A stand-in for `apptainer` (none is packaged here): `build OUT SRC` writes OUT, `inspect` prints `labels`."""
    tool = tmp_path / "apptainer"
    inspected = json.dumps({"data": {"attributes": {"labels": labels}}, "type": "container"})
    tool.write_text(f'#!/bin/sh\nif [ "$1" = build ]; then echo "sif of $3" > "$2"; exit 0; fi\necho \'{inspected}\'\n')
    tool.chmod(0o755)
    return str(tool)


def test_a_sif_that_keeps_the_labels_is_kept_beside_the_archive(tmp_path):
    archive = tmp_path / "torch-2.13.0-cpu-lab.tar"
    archive.write_bytes(b"archive")
    item = export_module.Exported(REF, IMAGE_ID, archive, 7, "a" * 64, "exported", 1.0)
    sif = build_sif(fake_apptainer(tmp_path, LABELS), item, LABELS, say=lambda text: None)
    assert sif == tmp_path / "torch-2.13.0-cpu-lab.sif"
    assert sif.read_text() == f"sif of docker-archive:{archive}\n"
    assert not list(tmp_path.glob(".*"))


def test_a_sif_that_lost_the_labels_is_not_kept(tmp_path):
    archive = tmp_path / "torch-2.13.0-cpu-lab.tar"
    archive.write_bytes(b"archive")
    item = export_module.Exported(REF, IMAGE_ID, archive, 7, "a" * 64, "exported", 1.0)
    with pytest.raises(LabstackError, match=r"lost the image's labels labstack\.framework"):
        build_sif(fake_apptainer(tmp_path, {"maintainer": "someone"}), item, LABELS, say=lambda text: None)
    assert not (tmp_path / "torch-2.13.0-cpu-lab.sif").exists() and not list(tmp_path.glob(".*"))


def test_the_next_commands_check_the_sum_build_a_sif_and_take_enroot_through_a_daemon(tmp_path):
    item = export_module.Exported(REF, IMAGE_ID, tmp_path / "torch-2.13.0-cpu-lab.tar", 1, "a" * 64, "exported", 1.0)
    text = "\n".join(next_commands([item], tmp_path))
    assert "sha256sum -c torch-2.13.0-cpu-lab.tar.sha256" in text
    assert "apptainer build torch-2.13.0-cpu-lab.sif docker-archive:torch-2.13.0-cpu-lab.tar" in text
    assert (
        f"docker load -i torch-2.13.0-cpu-lab.tar && enroot import -o torch-2.13.0-cpu-lab.sqsh dockerd://{REF}" in text
    )
    assert "enroot import docker-archive" not in text and "enroot import torch" not in text


class FakeImage:
    """What export reads of a docker image; `save` streams `archive` (which may hold another image)."""

    def __init__(self, archive: bytes, image_id: str = IMAGE_ID, size: int = 1000) -> None:
        self.id, self.archive = image_id, archive
        self.attrs = {"Size": size, "RepoDigests": [], "Created": "2026-11-27T04:15:22Z"}
        self.labels = dict(LABELS)
        self.tags = [REF]

    def save(self, named=None):
        assert named == REF
        for start in range(0, len(self.archive), 512):
            yield self.archive[start : start + 512]


class FakeClient:
    def __init__(self, image: FakeImage) -> None:
        self.images = self
        self.image = image

    def get(self, ref: str) -> FakeImage:
        assert ref == REF
        return self.image


def saved(config: str = CONFIG, tags: tuple[str, ...] = (REF,)) -> bytes:
    return docker_archive({"manifest.json": [{"Config": f"{config}.json", "RepoTags": list(tags)}]})


def test_an_export_writes_the_archive_its_checksum_and_its_record_then_is_unchanged(tmp_path):
    client = FakeClient(FakeImage(saved()))
    first = export_image(client, REF, tmp_path, say=lambda text: None)
    archive = tmp_path / "torch-2.13.0-cpu-lab.tar"
    assert first.status == "exported" and first.archive == archive and archive.read_bytes() == saved()
    assert first.sha256 == hashlib.sha256(saved()).hexdigest()
    assert (tmp_path / "torch-2.13.0-cpu-lab.tar.sha256").read_text() == sha256_line(first.sha256, archive)
    record = json.loads((tmp_path / "torch-2.13.0-cpu-lab.json").read_text())
    assert record["ref"] == REF and record["image_id"] == IMAGE_ID and record["labels"] == LABELS
    assert record["archive_bytes"] == len(saved()) and record["sha256"] == first.sha256
    assert record["labstack_revision"] and record["created"] and record["image_created"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "torch-2.13.0-cpu-lab.json", "torch-2.13.0-cpu-lab.tar", "torch-2.13.0-cpu-lab.tar.sha256",
    ]  # fmt: skip
    (tmp_path / "torch-2.13.0-cpu-lab.tar.sha256").unlink()
    again = export_image(client, REF, tmp_path, say=lambda text: None)
    assert again.status == "unchanged" and again.sha256 == first.sha256
    assert (tmp_path / "torch-2.13.0-cpu-lab.tar.sha256").read_text() == sha256_line(first.sha256, archive)


@pytest.mark.parametrize(("config", "tags"), [("d" * 64, (REF,)), (CONFIG, ("lsexport/torch:other",))])
def test_an_image_that_changed_during_the_save_is_refused_and_nothing_is_written(tmp_path, config, tags):
    client = FakeClient(FakeImage(saved(config, tags)))
    with pytest.raises(LabstackError) as caught:
        export_image(client, REF, tmp_path, say=lambda text: None)
    assert "nothing was written" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_export_without_room_for_the_image_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "free_bytes", lambda path: (path, 1099))
    client = FakeClient(FakeImage(saved(), size=1000))
    with pytest.raises(LabstackError) as caught:
        export_image(client, REF, tmp_path, say=lambda text: None)
    assert caught.value.code == ExitCode.NO_DISK
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export_module, "free_bytes", lambda path: (path, 1100))
    assert export_image(client, REF, tmp_path, say=lambda text: None).status == "exported"


NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_invoke_export_to_a_file_is_bad_input_before_docker_is_asked(tmp_path):
    (tmp_path / "exports").write_text("a file")
    result = run_invoke("export", "--out", str(tmp_path / "exports"), env=NO_DOCKER)
    assert_one_line_failure(result, ExitCode.BAD_INPUT, "is a file", "give a folder")


@pytest.mark.parametrize(
    ("args", "words"), [(["--image", "jax-cpu"], "unknown image jax-cpu"), (["--layer", "os"], "unknown layer os")]
)
def test_invoke_export_of_an_unknown_name_is_bad_input(args, words, tmp_path):
    result = run_invoke("export", *args, "--out", str(tmp_path / "exports"), env=NO_DOCKER)
    assert_one_line_failure(result, ExitCode.BAD_INPUT, words, "choose from")
    assert not (tmp_path / "exports").exists()


def test_invoke_export_without_a_docker_daemon_is_one_line_and_creates_nothing(tmp_path):
    result = run_invoke("export", "--out", str(tmp_path / "exports"), env=NO_DOCKER)
    assert_one_line_failure(result, ExitCode.NO_DOCKER, "cannot reach the Docker daemon")
    assert not (tmp_path / "exports").exists()
