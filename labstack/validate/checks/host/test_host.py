"""Is this machine (or lab server) ready for labstack? Each check names the fix when it fails."""

from __future__ import annotations

import json

import pytest

from labstack import payload
from labstack.gpu import (
    HOOKS,
    device_nodes_problem,
    devices_by_uuid,
    docker_gpu_problem,
    driver_problem,
    shm_problem,
    version_tuple,
)
from labstack.matrix import GB, load_matrix

MATRIX = load_matrix()
CUDA_IMAGES = MATRIX.select("all", "cuda")
DOCKER_FIX = "start it (`sudo scripts/install-docker.sh` installs and starts Docker Engine on Debian)"


def docker_json(machine, *args: str):
    result = machine.run("docker " + " ".join(args), timeout=30)
    assert result.rc == 0, (
        f"cannot reach the Docker daemon on {machine.target.label}: {last_line(result)}: {DOCKER_FIX}"
    )
    return json.loads(result.stdout)


def last_line(result) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.rc}"


def test_docker_daemon_is_reachable(machine):
    server = docker_json(machine, "version", "--format", "'{{json .Server}}'")
    assert server and version_tuple(server["Version"]) >= (20, 10), (
        f"Docker Engine {server and server['Version']} on {machine.target.label} is older than 20.10: upgrade it"
    )


def test_compose_v2_is_installed(machine):
    result = machine.run("docker compose version --short", timeout=30)
    version = result.stdout.strip().lstrip("v")
    assert result.rc == 0 and version_tuple(version)[:1] >= (2,), (
        f"Docker Compose v2 is missing on {machine.target.label} ({last_line(result)}): install the "
        "docker-compose-plugin (scripts/install-docker.sh does it on Debian)"
    )


def test_disk_has_room_for_the_cpu_images(machine):
    root = docker_json(machine, "info", "--format", "'{{json .DockerRootDir}}'") or "/var/lib/docker"
    result = machine.run(f"df -B1 --output=avail {root}")
    assert result.rc == 0, f"cannot read free space at {root}: {last_line(result)}"
    free = int(result.stdout.split()[-1])
    needed = sum(i.disk_gb for i in MATRIX.select("all", "cpu")) * GB
    assert free >= needed, (
        f"{free / GB:.1f} GB free at {root} on {machine.target.label}, the CPU images need about "
        f"{needed / GB:.0f} GB: free space (`docker system prune`)"
    )


def test_dev_shm_is_large_enough_for_dataloader_workers(machine):
    problem = shm_problem(machine.probe("shm"), where=machine.target.label)
    assert problem is None, problem


@pytest.mark.gpu
def test_nvidia_driver_is_present(host_nvml):
    assert version_tuple(host_nvml["driver_version"]), host_nvml


@pytest.mark.gpu
def test_nvidia_device_nodes_exist_including_uvm(machine, host_nvml):
    nodes = machine.run("sh -c 'ls -1 /dev/nvidia*'").stdout.split()
    problem = device_nodes_problem(nodes)
    assert problem is None, problem


@pytest.mark.gpu
def test_docker_can_start_gpu_containers(machine, host_nvml):
    info = docker_json(machine, "info", "--format", "'{{json .}}'")
    hooks = any(machine.host.exists(hook) for hook in HOOKS)
    problem = docker_gpu_problem(info, hooks)
    assert problem is None, problem


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_image", CUDA_IMAGES, ids=[i.name for i in CUDA_IMAGES])
def test_driver_is_new_enough_for_the_cuda_image(host_nvml, cuda_image):
    problem = driver_problem(host_nvml["driver_version"], cuda_image, MATRIX)
    assert problem is None, problem


@pytest.mark.gpu
def test_pytorch_on_the_host_sees_the_gpus_nvml_lists(machine, host_nvml):
    torch = machine.probe("torch")
    if not torch.get("available"):
        pytest.skip(f"no PyTorch for {machine.python} on {machine.target.label}: the image checks cover it")
    assert torch["cuda_available"], torch.get("reason")
    assert devices_by_uuid(torch["devices"]) == devices_by_uuid(host_nvml["devices"])


@pytest.mark.gpu
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_gpu_matmul_on_the_host_matches_the_cpu(machine, host_nvml, framework):
    if not machine.probe(framework).get("available"):
        pytest.skip(f"no {framework} for {machine.python} on {machine.target.label}: the image checks cover it")
    check = machine.run_json(
        machine.python,
        "-c",
        payload.standalone("checks"),
        "matmul",
        "--framework",
        framework,
        "--device",
        "cuda",
        timeout=300,
    )
    assert check.get("ok"), check.get("reason")
    assert check["device_used"].startswith("cuda"), f"{framework} ran the matmul on {check['device_used']}"
    assert check["relative_error"] < 1e-2, check
