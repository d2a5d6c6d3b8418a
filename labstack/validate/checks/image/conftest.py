"""Image checks: each check runs in a fresh container of the image through pytest-testinfra's docker:// backend.
The images are the plugin's selection (--images, or the developers' --variant, built once per session)."""

from __future__ import annotations

import json
import uuid

import pytest
import testinfra

from labstack import payload
from labstack.validate.plugin import ENVIRONMENT

COMMAND_TIMEOUT = 120


@pytest.fixture
def image(request, built, client):
    if request.config.getoption("--labstack-report") and request.param.name not in ENVIRONMENT:
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
        record["probes"] = run_payload(client, image, "probe", "all")
    except Exception as err:  # the record says why it is incomplete; the checks themselves report failures
        record["probes"] = {"error": str(err).strip().splitlines()[0]}
    return record


def run_payload(client, image, program: str, *args: str, **options) -> dict:
    """Run a payload program in a throwaway container of the image (no network, with a timeout) and parse the
    one JSON line it prints."""
    out = client.containers.run(
        image.ref, ["timeout", str(COMMAND_TIMEOUT), "python3", "-W", "ignore", payload.in_image(program), *args],
        network_mode="none", remove=True, stderr=False, **options,
    )  # fmt: skip
    return json.loads(out.decode().strip().splitlines()[-1])


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
