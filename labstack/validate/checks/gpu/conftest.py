"""GPU checks in containers: each CUDA image of the session, started on this machine's GPUs.

The host's GPU list is captured once through NVML; without a usable GPU every check here skips with the
reason (--gpu auto) or fails (--gpu require). Before a CUDA container starts, the image's min_driver label
is checked against the host driver, so a too-old driver gets its own diagnosis rather than a CUDA error.
"""

from __future__ import annotations

import json

import docker.types
import pytest

from labstack import payload
from labstack.gpu import LocalGpu, local_gpu, nvml_problem
from labstack.validate.plugin import apply_gpu_gate

ALL_GPUS = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]


@pytest.fixture(scope="session")
def host_gpu(request) -> LocalGpu:
    gpu = local_gpu()
    apply_gpu_gate(request.config, nvml_problem(gpu.nvml))
    return gpu


@pytest.fixture
def image(request, host_gpu, built):
    return request.param


def run_in_gpu_container(client, image, program: str, *args: str, gpus=ALL_GPUS, **options) -> dict:
    """Run a payload program of the image on this machine's GPUs (timeout inside) and parse its JSON line."""
    out = client.containers.run(
        image.ref, ["timeout", "300", "python3", "-W", "ignore", payload.in_image(program), *args],
        device_requests=gpus, network_mode="none", remove=True, stderr=False, **options,
    )  # fmt: skip
    return json.loads(out.decode().strip().splitlines()[-1])
