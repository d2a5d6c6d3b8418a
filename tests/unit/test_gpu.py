"""The GPU decisions, from probe outputs recorded on this CPU machine and from NVML answers a fake pynvml
gives (NVML cannot exist here). The GPU path itself runs for real in tests/gpu and tests/host on a GPU host."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from labstack import payload
from labstack.gpu import (
    LocalGpu,
    device_nodes_problem,
    devices_by_uuid,
    docker_gpu_problem,
    driver_problem,
    gpu_problems,
    nvml_problem,
    shm_problem,
    version_tuple,
)
from labstack.matrix import load_matrix

DATA = Path(__file__).parent / "data"
MATRIX = load_matrix()
TORCH_CUDA = MATRIX.image("torch", "cuda")
ALL_NODES = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def load_probe():
    return payload.load("probe")


class FakeNVMLError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_pynvml(driver="580.95.05", cuda=13000, gpus=(("NVIDIA H100 80GB HBM3", "GPU-1b2c"),), init_error=None):
    """The few pynvml calls the probe makes, answering like a host with this driver and these GPUs."""
    nvml = types.SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_ERROR_LIBRARY_NOT_FOUND=12,
        NVML_ERROR_DRIVER_NOT_LOADED=9,
        NVML_ERROR_NO_PERMISSION=4,
    )

    def init():
        if init_error is not None:
            raise FakeNVMLError(init_error)

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlSystemGetDriverVersion = lambda: driver
    nvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: cuda
    nvml.nvmlDeviceGetCount = lambda: len(gpus)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda i: gpus[i][0]
    nvml.nvmlDeviceGetUUID = lambda i: gpus[i][1]
    nvml.nvmlDeviceGetMemoryInfo = lambda i: types.SimpleNamespace(total=85_520_809_984)
    nvml.nvmlDeviceGetCudaComputeCapability = lambda i: (9, 0)
    return nvml


def nvml_probe(monkeypatch, **answers) -> dict:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(**answers))
    return load_probe().probe_nvml()


def test_versions_compare_numerically():
    assert version_tuple("580.65.06") == (580, 65, 6)
    assert version_tuple("1000.1") > version_tuple("580.65.06") > version_tuple("535.104.05")


def test_nvml_probe_reports_driver_cuda_and_devices(monkeypatch):
    nvml = nvml_probe(monkeypatch, gpus=(("NVIDIA H100 80GB HBM3", "GPU-a"), ("NVIDIA H100 80GB HBM3", "GPU-b")))
    assert nvml["available"] and nvml["driver_version"] == "580.95.05" and nvml["cuda_driver_version"] == "13.0"
    assert devices_by_uuid(nvml["devices"]) == ["GPU-a", "GPU-b"]
    assert nvml["devices"][0]["compute_capability"] == "9.0"
    assert nvml_problem(nvml) is None


def test_no_driver_recorded_on_this_machine_names_the_fix():
    problem = nvml_problem(recorded("nvml-no-driver.json"))
    assert problem.startswith("no NVIDIA driver on this host") and "invoke up-cpu" in problem


def test_cuda_image_without_gpu_recorded_here_reports_no_driver_not_a_crash():
    probes = recorded("cuda-image-without-gpu.json")
    assert probes["nvml"]["kind"] == "no-driver"
    assert probes["torch"]["cuda_compiled"] and not probes["torch"]["cuda_available"]


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [(12, "no-driver", "install the NVIDIA driver"), (9, "driver-not-loaded", "modprobe nvidia")],
)
def test_nvml_init_failures_are_classified(monkeypatch, error, kind, words):
    nvml = nvml_probe(monkeypatch, init_error=error)
    assert nvml["kind"] == kind
    assert words in nvml_problem(nvml)


def test_masked_devices_leave_no_gpu_and_say_so(monkeypatch):
    """NVIDIA_VISIBLE_DEVICES=none: the driver answers, but lists no device."""
    problem = nvml_problem(nvml_probe(monkeypatch, gpus=()))
    assert "sees no GPU" in problem


def test_driver_too_old_for_cuda_13_names_versions_image_and_ways_out(monkeypatch):
    nvml = nvml_probe(monkeypatch, driver="535.104.05", cuda=12020)
    problem = driver_problem(nvml["driver_version"], TORCH_CUDA, MATRIX)
    assert problem.startswith(f"driver 535 < 580 required by CUDA 13.0 in {TORCH_CUDA.ref}: upgrade the NVIDIA driver")
    assert MATRIX.image("torch", "cpu").ref in problem
    assert MATRIX.image("tensorflow", "cuda").ref in problem  # CUDA 12.9 runs on R535


def test_new_enough_driver_and_cpu_images_pass():
    assert driver_problem("580.65.06", TORCH_CUDA, MATRIX) is None
    assert driver_problem("400.1", MATRIX.image("torch", "cpu"), MATRIX) is None


def test_docker_without_toolkit_recorded_here_names_nvidia_ctk():
    problem = docker_gpu_problem(recorded("docker-info-no-toolkit.json"), hooks_found=False)
    assert "NVIDIA Container Toolkit" in problem and "nvidia-ctk runtime configure" in problem


@pytest.mark.parametrize(
    "info",
    [
        {"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}},
        {"Runtimes": {"runc": {}}, "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=0"}]},
    ],
    ids=["runtime", "cdi"],
)
def test_docker_with_the_runtime_or_cdi_devices_can_start_gpu_containers(info):
    assert docker_gpu_problem(info, hooks_found=False) is None


def test_toolkit_hook_alone_is_enough_for_docker_run_gpus():
    assert docker_gpu_problem(recorded("docker-info-no-toolkit.json"), hooks_found=True) is None


def test_device_nodes():
    assert device_nodes_problem(ALL_NODES) is None
    assert "nvidia-modprobe -u" in device_nodes_problem(["/dev/nvidia0", "/dev/nvidiactl"])
    assert "modprobe nvidia" in device_nodes_problem([])


def test_shm_default_docker_size_is_flagged():
    assert "--shm-size" in shm_problem({"available": True, "size_bytes": 64 * 1024**2})
    assert shm_problem({"available": True, "size_bytes": 2 * 1024**3}) is None


def test_gpu_problems_stop_at_the_most_basic_one(monkeypatch):
    no_driver = LocalGpu(nvml=recorded("nvml-no-driver.json"), nodes=[], hooks_found=False)
    assert len(gpu_problems(TORCH_CUDA, MATRIX, no_driver, {})) == 1
    old = LocalGpu(nvml=nvml_probe(monkeypatch, driver="535.104.05"), nodes=ALL_NODES, hooks_found=False)
    problems = gpu_problems(TORCH_CUDA, MATRIX, old, recorded("docker-info-no-toolkit.json"))
    assert [p.split()[0] for p in problems] == ["driver", "Docker"]
