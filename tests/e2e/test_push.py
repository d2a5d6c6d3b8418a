"""Pushing to a real registry: Debian's docker-registry run by LocalRegistry on loopback, the small OS image
under private names (LABSTACK_REPOSITORY points the matrix at them), digests checked against the registry's own
HTTP API, and `invoke push` as a user runs it, failures included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from labstack import ROOT
from labstack.deploy import registry as registry_module
from labstack.deploy.registry import LocalRegistry, free_port, manifest_digest, push, registry_ref
from labstack.engine import connect
from labstack.errors import LabstackError
from labstack.matrix import REPOSITORY_VARIABLE, load_matrix
from tests.invoking import assert_one_line_failure, run_invoke

NAMESPACE = f"lspush-{uuid.uuid4().hex[:8]}"  # the matrix's images under a private name: never a lab's own
MATRIX = load_matrix()
COMMAND_TIMEOUT = 180
LISTEN = "0A"  # TCP state in /proc/net/tcp


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_invoke(*args, env={REPOSITORY_VARIABLE: NAMESPACE, **(env or {})}, timeout=COMMAND_TIMEOUT)


def tags_in(namespace: str) -> list[str]:
    return [tag for image in connect().images.list() for tag in image.tags if namespace in tag]


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of the sockets listening on `port`, IPv4 and IPv6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == LISTEN and int(port_hex, 16) == port:
                found.append(address)
    return found


@pytest.fixture(scope="module")
def lab_images(os_image):
    """The OS image tagged as this module's torch-cpu image at the framework and lab layers (the matrix refs
    under NAMESPACE); the tags go afterwards, the image stays."""
    client = connect()
    torch_cpu = MATRIX.image("torch", "cpu")
    refs = [f"{NAMESPACE}/torch:{torch_cpu.tag}", f"{NAMESPACE}/torch:{torch_cpu.tag}-lab"]
    for ref in refs:
        client.images.get(os_image).tag(*ref.rsplit(":", 1))
    try:
        yield refs
    finally:
        for tag in tags_in(NAMESPACE):
            client.images.remove(tag, noprune=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_push_returns_the_registrys_digest_and_a_second_push_finds_every_layer(lab_images, registry):
    client = connect()
    ref = lab_images[0]
    repository, tag = registry_ref(ref, registry.address).split("/", 1)[1].rsplit(":", 1)
    assert manifest_digest(registry.address, repository, tag) is None

    first: list[str] = []
    started = time.monotonic()
    digest = push(client, ref, registry.address, first.append)
    seconds = time.monotonic() - started
    assert digest.startswith("sha256:") and len(digest) == 71
    assert manifest_digest(registry.address, repository, tag) == digest
    assert manifest_digest(registry.address, repository, digest) == digest
    assert any(" pushed (" in line for line in first), first

    again: list[str] = []
    started = time.monotonic()
    assert push(client, ref, registry.address, again.append) == digest
    seconds_again = time.monotonic() - started
    layer_lines = [line for line in again if ": layer " in line]
    assert layer_lines and all(" exists (" in line for line in layer_lines), again
    print(f"push of the OS image to a fresh registry: {seconds:.1f} s; again: {seconds_again:.2f} s")

    log = registry.log.read_text()
    assert f"PUT /v2/{repository}/manifests/{tag} " in log
    assert registry_ref(ref, registry.address) not in tags_in(NAMESPACE), "the registry tag stays on the daemon"
    assert ref in tags_in(NAMESPACE), "push removed the image's own tag"


def test_the_registry_listens_on_loopback_only_and_is_gone_after(tmp_path):
    storage = tmp_path / "storage"
    with LocalRegistry(storage) as running:
        folder = running.log.parent
        assert running.address == f"127.0.0.1:{running.port}"
        assert listeners(running.port) == ["0100007F"], "the registry listens beyond 127.0.0.1"
        assert Path(f"/proc/{running.pid}").exists()
    assert not Path(f"/proc/{running.pid}").exists(), "the registry process outlived its with block"
    assert listeners(running.port) == []
    assert not folder.exists(), "the config folder stayed"
    assert storage.is_dir(), "the storage went with the registry"


def test_invoke_push_records_the_digests_the_registry_serves(lab_images, registry, tmp_path):
    out = tmp_path / "digests.json"
    result = invoke("push", "--registry", registry.address, "--image", "torch-cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"digests: {out}" in result.stdout
    record = json.loads(out.read_text())
    assert record["registry"] == registry.address and record["labstack_revision"]
    (pushed,) = record["images"]
    ref = lab_images[1]
    assert pushed["ref"] == ref and pushed["registry_ref"] == registry_ref(ref, registry.address)
    assert pushed["image_id"] == connect().images.get(ref).id
    repository, tag = pushed["registry_ref"].split("/", 1)[1].rsplit(":", 1)
    digest = manifest_digest(registry.address, repository, tag)
    assert pushed["manifest_digest"] == digest and pushed["verified"]
    assert pushed["digest"] == f"{registry.address}/{repository}@{digest}"
    assert registry_ref(ref, registry.address) not in tags_in(NAMESPACE)


def test_invoke_push_to_an_unreachable_registry_is_one_line(lab_images):
    closed = f"127.0.0.1:{free_port()}"
    result = invoke("push", "--registry", closed, "--image", "torch-cpu", "--out", "/nonexistent/digests.json")
    assert_one_line_failure(result, 1, closed, "is the registry running and reachable", "insecure-registries")
    assert not [tag for tag in tags_in(NAMESPACE) if tag.startswith(closed)], "the registry tag stays on the daemon"


def test_invoke_push_of_an_image_not_built_here_names_the_build(lab_images):
    result = invoke("push", "--registry", "127.0.0.1:5000", "--image", "tensorflow-cpu")
    tensorflow_cpu = MATRIX.image("tensorflow", "cpu")
    assert_one_line_failure(
        result, 1, f"{NAMESPACE}/tensorflow:{tensorflow_cpu.tag}-lab is not built here",
        "`invoke build --framework tensorflow --variant cpu --layer lab`",
    )  # fmt: skip


def test_invoke_push_with_nothing_built_here_is_one_line():
    result = invoke("push", "--registry", "127.0.0.1:5000", env={REPOSITORY_VARIABLE: f"{NAMESPACE}-none"})
    assert_one_line_failure(result, 1, "no labstack lab image is built here", "invoke build --layer lab")


def test_invoke_push_of_a_bad_registry_is_bad_input():
    assert_one_line_failure(invoke("push", "--registry", "http://127.0.0.1:5000"), 2, "scheme")
    assert_one_line_failure(invoke("push"), 2, "--registry is required")


def test_ctrl_c_during_a_push_is_interrupted_and_leaves_no_tag(lab_images, tmp_path):
    with LocalRegistry(tmp_path / "storage") as fresh:
        process = subprocess.Popen(
            [sys.executable, "-m", "invoke", "push", "--registry", fresh.address, "--image", "torch-cpu",
             "--out", str(tmp_path / "digests.json")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, REPOSITORY_VARIABLE: NAMESPACE},
        )  # fmt: skip
        assert process.stderr is not None
        first = process.stderr.readline()  # "pushing ... to ...": the daemon reached the registry
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    assert first.startswith("pushing "), first + rest
    assert process.returncode == 130, first + rest
    assert rest.strip().splitlines()[-1] == "labstack: interrupted"
    assert "Traceback" not in rest
    assert not [tag for tag in tags_in(NAMESPACE) if tag.startswith(fresh.address)]
    assert not (tmp_path / "digests.json").exists()


def test_a_taken_port_is_retried_on_another(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(registry_module, "free_port", lambda: next(ports))
        with LocalRegistry(tmp_path / "storage") as running:
            assert running.port != taken.getsockname()[1]
            assert listeners(running.port) == ["0100007F"]


def test_a_storage_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "storage").write_text("not a folder")
    with pytest.raises(LabstackError, match=r"cannot use .*storage as the registry's storage"):
        LocalRegistry(tmp_path / "storage").__enter__()


def test_a_storage_is_served_again_on_its_last_port_so_docker_knows_its_layers(tmp_path):
    with LocalRegistry(tmp_path / "storage") as first:
        port = first.port
    with LocalRegistry(tmp_path / "storage") as again:
        assert again.port == port
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the registry's last connections linger
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with LocalRegistry(tmp_path / "storage") as moved:
            assert moved.port != port  # the last port is taken: another one, recorded for next time
        assert (tmp_path / "storage" / "last-port").read_text().strip() == str(moved.port)
