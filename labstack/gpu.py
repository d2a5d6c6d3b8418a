"""Can this host run a CUDA image? The decisions, as pure functions of what the probes and Docker report.

Each problem is one sentence naming the fix; `gpu_preflight` (used by `invoke up-gpu` and before any CUDA
container is started with a GPU) raises the first one as a LabstackError.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

from labstack.errors import ExitCode, LabstackError
from labstack.matrix import Image, Matrix
from labstack.payload import run_probe

MIN_SHM_BYTES = 1024**3  # PyTorch DataLoader workers pass batches through /dev/shm; Docker's default is 64 MB
TOOLKIT_FIX = (
    "install the NVIDIA Container Toolkit (nvidia-container-toolkit), then `sudo nvidia-ctk runtime configure "
    "--runtime=docker && sudo systemctl restart docker`"
)
HOOKS = ("nvidia-container-runtime-hook", "nvidia-container-runtime")
# What a GPU check does where there is no usable GPU: skip with the reason, fail with it, or not run at all.
GPU_MODES = ("auto", "require", "skip")


def version_tuple(text: str) -> tuple[int, ...]:
    """'580.65.06' -> (580, 65, 6); non-numeric parts are ignored."""
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def nvml_problem(nvml: dict, where: str = "this host") -> str | None:
    """Why the NVML probe's result does not give a usable GPU, or None when it lists at least one device."""
    if nvml.get("available"):
        if nvml.get("devices"):
            return None
        return f"the NVIDIA driver {nvml.get('driver_version', '?')} on {where} sees no GPU: check `nvidia-smi`"
    kind, reason = nvml.get("kind"), nvml.get("reason", "unknown reason")
    if kind == "no-nvml-py":
        return f"cannot query the NVIDIA driver on {where}: nvidia-ml-py is not installed (`pip install nvidia-ml-py`)"
    if kind == "no-driver":
        return (
            f"no NVIDIA driver on {where} ({reason}): install the NVIDIA driver, or use the CPU images "
            "(`invoke up-cpu`)"
        )
    if kind == "driver-not-loaded":
        return f"the NVIDIA driver is installed on {where} but not loaded: `sudo modprobe nvidia` or reboot"
    if kind == "no-permission":
        return f"no permission to use the NVIDIA driver on {where}: check the /dev/nvidia* permissions"
    return f"cannot query the NVIDIA driver on {where}: {reason}"


def driver_problem(driver: str, image: Image, matrix: Matrix) -> str | None:
    """The image's CUDA needs `labstack.min_driver`; say which driver is there, which is needed and the way out."""
    if image.variant != "cuda" or not image.min_driver:
        return None
    if version_tuple(driver) >= version_tuple(image.min_driver):
        return None
    have, need = version_tuple(driver)[0], version_tuple(image.min_driver)[0]
    usable = [
        i.ref
        for i in matrix.images
        if i.variant == "cuda" and i.min_driver and version_tuple(driver) >= version_tuple(i.min_driver)
    ]
    cpu = matrix.image(image.framework, "cpu").ref
    other = f" or a CUDA image this driver supports ({', '.join(usable)})" if usable else ""
    return (
        f"driver {have} < {need} required by CUDA {image.cuda} in {image.ref}: upgrade the NVIDIA driver to "
        f"{image.min_driver} or newer, or use {cpu}{other}"
    )


def docker_gpu_problem(info: dict, hooks_found: bool) -> str | None:
    """Docker can start GPU containers when the NVIDIA runtime is registered, CDI lists NVIDIA devices, or the
    toolkit's hook is installed (which `docker run --gpus` calls)."""
    if "nvidia" in (info.get("Runtimes") or {}):
        return None
    discovered = info.get("DiscoveredDevices") or []
    if any(str(d.get("ID", "")).startswith("nvidia.com/gpu") for d in discovered):
        return None
    if hooks_found:
        return None
    return f"Docker has no NVIDIA runtime and no NVIDIA CDI devices: {TOOLKIT_FIX}"


def device_nodes_problem(nodes: list[str]) -> str | None:
    """The character devices CUDA opens: /dev/nvidiactl, one /dev/nvidiaN per GPU, and /dev/nvidia-uvm."""
    names = {node.rsplit("/", 1)[-1] for node in nodes}
    if "nvidiactl" not in names or not any(n[len("nvidia") :].isdigit() for n in names if n.startswith("nvidia")):
        return "no /dev/nvidiactl or /dev/nvidia0: the NVIDIA kernel module is not loaded (`sudo modprobe nvidia`)"
    if "nvidia-uvm" not in names:
        return (
            "/dev/nvidia-uvm is missing, so CUDA cannot start although nvidia-smi works: "
            "`sudo nvidia-modprobe -u -c=0` (or `sudo modprobe nvidia-uvm`)"
        )
    return None


def shm_problem(shm: dict, where: str = "this container") -> str | None:
    if not shm.get("available"):
        return f"{where} has no /dev/shm ({shm.get('reason')}): DataLoader workers need it; mount a tmpfs there"
    size = shm.get("size_bytes", 0)
    if size < MIN_SHM_BYTES:
        return (
            f"/dev/shm in {where} is {size / 1024**2:.0f} MB: DataLoader workers need more; "
            "run with `--shm-size=2g` (compose sets shm_size)"
        )
    return None


def devices_by_uuid(devices: list[dict]) -> list[str]:
    return sorted(d["uuid"] for d in devices if d.get("uuid"))


def gpu_gate(mode: str, problem: str | None) -> tuple[str, str | None]:
    """What a GPU check does on a target: 'run'; 'skip' with the reason (auto); 'fail' with it (require)."""
    if mode == "skip":
        return "skip", "GPU checks left out (--gpu skip)"
    if problem is None:
        return "run", None
    return ("fail" if mode == "require" else "skip"), problem


@dataclass(frozen=True)
class LocalGpu:
    """This machine's GPU state as the probes and /dev see it."""

    nvml: dict
    nodes: list[str]
    hooks_found: bool  # the NVIDIA Container Toolkit's hook or runtime is on PATH


@functools.cache
def local_gpu() -> LocalGpu:
    """Read once per command: every decision of one command is made on the same state, and a slow driver is
    asked once."""
    return LocalGpu(
        nvml=run_probe("nvml"),
        nodes=sorted(str(p) for p in Path("/dev").glob("nvidia*")),
        hooks_found=any(shutil.which(h) for h in HOOKS),
    )


def gpu_problems(image: Image, matrix: Matrix, gpu: LocalGpu, docker_info: dict) -> list[str]:
    """Every reason this host cannot run `image` on its GPU, most basic first (empty: it can)."""
    problem = nvml_problem(gpu.nvml)
    if problem:
        return [problem]
    problems = [
        device_nodes_problem(gpu.nodes),
        driver_problem(gpu.nvml["driver_version"], image, matrix),
        docker_gpu_problem(docker_info, gpu.hooks_found),
    ]
    return [p for p in problems if p]


def gpu_preflight(client, image: Image, matrix: Matrix) -> LocalGpu:
    """Refuse, with the fix, to start `image` on the GPU when this host cannot run it there."""
    gpu = local_gpu()
    problems = gpu_problems(image, matrix, gpu, client.info())
    if problems:
        raise LabstackError(problems[0], code=ExitCode.NO_GPU)
    return gpu
