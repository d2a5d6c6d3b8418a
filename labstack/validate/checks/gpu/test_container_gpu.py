"""A CUDA image on this machine's GPU sees exactly the host's GPUs and computes correctly on them."""

from __future__ import annotations

import dataclasses

import pytest

from labstack.gpu import devices_by_uuid, driver_problem
from labstack.matrix import load_matrix
from labstack.validate.checks.gpu.conftest import run_in_gpu_container

MATRIX = load_matrix()
# Every check here needs a usable GPU (--gpu skip leaves them out) and a CUDA image.
pytestmark = [pytest.mark.gpu, pytest.mark.only("cuda")]


def test_host_driver_meets_the_image_min_driver_label(client, image, host_gpu):
    label = client.images.get(image.ref).labels.get("labstack.min_driver")
    assert label, f"{image.ref} has no labstack.min_driver label: rebuild it with `invoke build --variant cuda`"
    labelled = dataclasses.replace(image, min_driver=label)
    problem = driver_problem(host_gpu.nvml["driver_version"], labelled, MATRIX)
    assert problem is None, problem


@pytest.fixture
def startable(client, image, host_gpu):
    """Checks that start the container need the driver check to pass first: say so instead of a CUDA error."""
    problem = driver_problem(host_gpu.nvml["driver_version"], image, MATRIX)
    if problem:
        pytest.fail(f"not started: {problem}", pytrace=False)
    return image


def test_container_sees_the_same_gpus_as_the_host(client, startable, host_gpu):
    probes = run_in_gpu_container(client, startable, "probe", "nvml", startable.framework)
    host_uuids = devices_by_uuid(host_gpu.nvml["devices"])
    assert devices_by_uuid(probes["nvml"].get("devices", [])) == host_uuids, probes["nvml"]
    framework = probes[startable.framework]
    if startable.framework == "torch":
        assert devices_by_uuid(framework["devices"]) == host_uuids, framework.get("reason")
    else:  # tf.config gives no UUIDs: the same number of GPUs, and none silently missing
        assert len(framework["devices"]) == len(host_uuids), framework.get("reason")


def test_gpu_matmul_in_the_container_matches_the_cpu(client, startable):
    check = run_in_gpu_container(client, startable, "checks", "matmul", "--framework", startable.framework)
    assert check.get("ok"), check.get("reason")
    assert check["device_used"].startswith("cuda"), f"the matmul ran on {check['device_used']}: a silent CPU fallback"
    assert check["relative_error"] < 1e-2, check


def test_nvidia_visible_devices_none_shows_no_gpu(client, startable):
    probes = run_in_gpu_container(
        client, startable, "probe", "nvml", startable.framework,
        environment={"NVIDIA_VISIBLE_DEVICES": "none"},
    )  # fmt: skip
    assert not probes["nvml"].get("devices"), probes["nvml"]
    assert not probes[startable.framework]["devices"], probes[startable.framework]


@pytest.mark.only("cuda", frameworks=("torch",))  # DataLoader workers are PyTorch's; tf.data uses threads, not /dev/shm
def test_dataloader_workers_fit_in_shm_on_the_gpu_image(client, startable):
    check = run_in_gpu_container(client, startable, "checks", "dataloader", shm_size="1g")
    assert check["ok"], check
