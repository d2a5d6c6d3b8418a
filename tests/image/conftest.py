"""Image tests: build the selected images once per session (cached layers make this quick when they exist),
then run each check in a fresh container through pytest-testinfra's docker:// backend."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import testinfra

from labstack.build import build_images
from labstack.engine import connect
from labstack.matrix import load_matrix

MATRIX = load_matrix()
COMMAND_TIMEOUT = 120


def selected_images(config):
    return MATRIX.select("all", config.getoption("--variant"))


def pytest_generate_tests(metafunc):
    if "image" in metafunc.fixturenames:
        images = selected_images(metafunc.config)
        wanted = getattr(metafunc.function, "variants", ("cpu", "cuda"))
        images = [i for i in images if i.variant in wanted]
        metafunc.parametrize("image", images, ids=[i.name for i in images], indirect=True)


@pytest.fixture(scope="session")
def client():
    return connect()


@pytest.fixture(scope="session")
def built(request, client):
    """{image name: BuildResult}: every selected image, built (or found cached) once for the session."""
    results = build_images(MATRIX, selected_images(request.config))
    return {r.image.name: r for r in results}


@pytest.fixture
def image(request, built):
    return request.param


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
