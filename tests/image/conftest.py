"""Image tests: the selected images are built once per session (or, with --images, only found), then each
check runs in a fresh container through pytest-testinfra's docker:// backend."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import testinfra

from labstack.matrix import load_matrix
from labstack.pytest_report import ENVIRONMENT
from labstack.validate import suite_images
from tests.marks import images_for

MATRIX = load_matrix()
COMMAND_TIMEOUT = 120


def pytest_generate_tests(metafunc):
    if "image" in metafunc.fixturenames:
        config = metafunc.config
        images = suite_images(MATRIX, config.getoption("--images"), config.getoption("--variant"))
        images = images_for(metafunc, images)
        metafunc.parametrize("image", images, ids=[i.name for i in images], indirect=True)


@pytest.fixture
def image(request, built, client):
    if request.config.getoption("--labstack-report", None) and request.param.name not in ENVIRONMENT:
        ENVIRONMENT[request.param.name] = image_environment(client, request.param)
    return request.param


def image_environment(client, image) -> dict:
    """What this image is and what it finds here: digest, labels, and the probes run inside it."""
    attrs = client.images.get(image.ref).attrs
    record = {
        "image": image.ref,
        "id": attrs["Id"],
        "repo_digests": attrs.get("RepoDigests", []),
        "created": attrs.get("Created"),
        "labels": attrs["Config"].get("Labels") or {},
    }
    try:
        out = client.containers.run(
            image.ref, ["timeout", "120", "python3", "/opt/labstack/scripts/probe.py", "all"],
            network_mode="none", remove=True, stderr=False,
        )  # fmt: skip
        record["probes"] = json.loads(out.decode().strip().splitlines()[-1])
    except Exception as err:  # the record says why it is incomplete; the checks themselves report failures
        record["probes"] = {"error": str(err).strip().splitlines()[0]}
    return record


@pytest.fixture
def host(image, client):
    """A running container of `image` as a testinfra host; removed afterwards whatever happens."""
    name = f"labstack-test-{image.name}-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(image.ref, ["sleep", "infinity"], name=name, detach=True, network_mode="none")
    try:
        yield testinfra.get_host(f"docker://{container.id}")
    finally:
        container.remove(force=True)


def run_python(host, code: str) -> str:
    """Run Python in the container with a timeout; fail with its stderr if it fails."""
    result = host.run("timeout %s python -c %s", str(COMMAND_TIMEOUT), code)
    assert result.rc == 0, f"python failed (rc {result.rc}):\n{result.stderr[-2000:]}"
    return result.stdout.strip()


def docker_cli(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=600).stdout
