#!/usr/bin/env python3
"""labstack probes: print one JSON line saying what this machine or container has.

    python3 probe.py nvml|torch|tensorflow|cpu|threads|shm|all [...]

Runs inside a labstack image (/opt/labstack/payload/probe.py), on a bare host beside threads.py, or over ssh
as `python3 -c TEXT nvml` with TEXT from labstack.payload.standalone("probe"), which carries threads.py along;
payload/manifest.py records its framework probe at build time. Standard library only, apart from the library a
probe is about. A probe never raises: what cannot be found is reported with the reason ({"available": false,
"reason": ...}).
Assertions happen on the host, in pytest; this script only reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import platform
import re
import sys

import threads  # the payload's CPU limit and thread rule, beside this file

# What the image's build wrote about itself (payload/manifest.py).
MANIFEST_DIR = "/opt/labstack/manifest"
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip


def quiet_import(name: str):
    """Import a framework with its C++ start-up chatter kept off our stdout/stderr (the JSON line stays alone)."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        return __import__(name)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe_nvml() -> dict:
    """Driver and devices as NVML (the driver's own library) sees them, or why NVML cannot be used."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py is not installed for this Python", "kind": "no-nvml-py"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        kinds = {
            pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "no-driver",
            pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "driver-not-loaded",
            pynvml.NVML_ERROR_NO_PERMISSION: "no-permission",
        }
        return {"available": False, "reason": f"NVML: {err}", "kind": kinds.get(err.value, "nvml-error")}
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            devices.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                    "memory_total": int(memory.total),
                    "compute_capability": f"{major}.{minor}",
                }
            )
        return {
            "available": True,
            "driver_version": _text(pynvml.nvmlSystemGetDriverVersion()),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
            "devices": devices,
        }
    except pynvml.NVMLError as err:
        return {"available": False, "reason": f"NVML: {err}", "kind": "nvml-error"}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _loaded_library(stem: str) -> str | None:
    """Path of a shared library this process has mapped (e.g. libcudart), as the dynamic loader chose it."""
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if f"/{stem}.so" in path:
                return path
    return None


def _cuda_runtime_loaded() -> str | None:
    path = _loaded_library("libcudart")
    if not path:
        return None
    version = ctypes.c_int()
    if ctypes.CDLL(path).cudaRuntimeGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def probe_torch() -> dict:
    try:
        torch = quiet_import("torch")
    except ImportError as err:
        return {"available": False, "reason": f"torch cannot be imported: {err}"}
    info = {
        "available": True,
        "version": torch.__version__,
        "built_with_cuda": bool(torch.version.cuda),
        "cuda_compiled": torch.version.cuda,
        "cudnn_compiled": None,
        "cuda_available": False,
        "devices": [],
        "threads": torch.get_num_threads(),
    }
    if torch.version.cuda:
        with contextlib.suppress(Exception):
            info["cudnn_compiled"] = torch._C._cudnn.getCompileVersion()  # (major, minor, patch)
        with contextlib.suppress(Exception):  # loads libcudnn: works without a GPU
            info["cudnn_loaded"] = torch.backends.cudnn.version()
        try:
            info["cuda_available"] = torch.cuda.is_available()
        except Exception as err:
            info["reason"] = f"torch.cuda: {err}"
    if info["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            uuid = str(getattr(props, "uuid", "") or "")
            info["devices"].append(
                {
                    "index": index,
                    "name": props.name,
                    "uuid": uuid if not uuid or uuid.startswith("GPU-") else f"GPU-{uuid}",
                    "memory_total": int(props.total_memory),
                    "compute_capability": f"{props.major}.{props.minor}",
                }
            )
        info["cuda_runtime_loaded"] = _cuda_runtime_loaded()
    elif torch.version.cuda and "reason" not in info:
        info["reason"] = "torch.cuda.is_available() is False: no GPU visible to this process"
    return info


def probe_tensorflow() -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        tf = quiet_import("tensorflow")
    except ImportError as err:
        return {"available": False, "reason": f"tensorflow cannot be imported: {err}"}
    build = dict(tf.sysconfig.get_build_info())
    info = {
        "available": True,
        "version": tf.__version__,
        "built_with_cuda": bool(tf.test.is_built_with_cuda()),
        "cuda_compiled": build.get("cuda_version"),
        "cudnn_compiled": build.get("cudnn_version"),
        "devices": [],
    }
    for index, device in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        info["devices"].append(
            {
                "index": index,
                "name": details.get("device_name", device.name),
                "compute_capability": ".".join(map(str, capability)) if capability else None,
            }
        )
    if info["built_with_cuda"]:
        info["cuda_runtime_loaded"] = _cuda_runtime_loaded()
        if not info["devices"]:
            info["reason"] = "tf.config lists no GPU: no GPU visible to this process, or CUDA libraries failed to load"
    return info


def _max_clock_mhz() -> tuple[float | None, str]:
    """The CPU's maximum clock and where it was read from (cpufreq, else the current clock in /proc/cpuinfo)."""
    with contextlib.suppress(OSError, ValueError):
        khz = int(_read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
        return khz / 1000, "cpufreq cpuinfo_max_freq"
    with contextlib.suppress(OSError):
        found = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", _read("/proc/cpuinfo"), re.M)
        if found:
            return max(float(f) for f in found), "/proc/cpuinfo 'cpu MHz' (current clock; no cpufreq)"
    return None, "unknown"


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs under the CPUs this process may use: SMT siblings count once."""
    cores = set()
    for cpu in os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else []:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            cores.add((_read(f"{topology}/physical_package_id").strip(), _read(f"{topology}/core_id").strip()))
        except OSError:
            return None
    return len(cores) or None


def probe_cpu() -> dict:
    """Model, vendor and family (AMD Zen 4 and Zen 5 both show avx512f but differ in FMA width), ISA flags,
    how many CPUs this process may use (affinity and cgroup quota) on how many physical cores, and the clock."""
    model, flags, text = platform.processor() or platform.machine(), set(), ""
    with contextlib.suppress(OSError):
        text = _read("/proc/cpuinfo")
        model = (re.findall(r"^model name\s*:\s*(.+)$", text, re.M) or [model])[0].strip()
        flags = set((re.findall(r"^flags\s*:\s*(.+)$", text, re.M) or [""])[0].split())
    details = {}
    for key, field in (("vendor_id", "vendor_id"), ("cpu_family", "cpu family"), ("model_number", "model")):
        found = re.search(rf"^{field}\s*:\s*(.+)$", text, re.M)
        value = found.group(1).strip() if found else None
        details[key] = int(value) if value and value.isdigit() else value
    limit = threads.cpu_limit()
    clock, clock_source = _max_clock_mhz()
    return {
        "model": model,
        "machine": platform.machine(),
        "logical_cpus": limit["cpu_count"],
        "affinity_cpus": limit["affinity_cpus"],
        "cgroup_cpu_limit": limit["cgroup_cpu_quota"],
        "usable_cpus": limit["usable_cpus"],
        "max_clock_mhz": clock,
        "clock_source": clock_source,
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
        "physical_cores": _physical_cores(),
        **details,
    }


def _thread_names() -> dict[int, str]:
    """This process's threads: id -> the name Linux holds for it (/proc/self/task/ID/comm)."""
    names = {}
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                names[int(task)] = _read(f"/proc/self/task/{task}/comm").strip()
    return names


def _torch_pools() -> dict:
    torch = quiet_import("torch")
    # intra-op: the OpenMP pool its CPU kernels use; inter-op: torch.jit.fork's pool (no variable sizes it).
    return {"available": True, "intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def _tensorflow_pools() -> dict:
    """The pools TensorFlow really started. tf.config.threading says 0 ("TensorFlow decides") unless Python set
    a size, so count the threads its first CPU ops start instead: the inter-op pool's are named tf_Compute; the
    intra-op pool's name (tf_numa_-1_Eigen) is longer than the 15 characters Linux keeps, so its threads keep
    the process's own name."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = quiet_import("tensorflow")
    before, own_name = _thread_names(), _read("/proc/self/comm").strip()
    with tf.device("/CPU:0"):
        x = tf.random.normal((64, 64))
        tf.function(lambda a: tf.matmul(a, a))(tf.matmul(x, x))
    started = [name for tid, name in _thread_names().items() if tid not in before]
    return {
        "available": True,
        "intra_op": started.count(own_name),
        "inter_op": started.count("tf_Compute"),
        "config_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "config_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "started_threads": sorted(started),
    }


def probe_threads() -> dict:
    """The CPU limit, the thread variables as this process sees them (after the images' startup hook), and the
    pool sizes of whichever frameworks are installed."""
    info = {**threads.cpu_limit(), "environment": {name: os.environ.get(name) for name in threads.VARIABLES}}
    for name, pools in (("torch", _torch_pools), ("tensorflow", _tensorflow_pools)):
        if importlib.util.find_spec(name) is None:
            info[name] = {"available": False, "reason": f"{name} is not installed for this Python"}
            continue
        try:
            info[name] = pools()
        except Exception as err:
            info[name] = {"available": False, "reason": f"{type(err).__name__}: {err}"}
    return info


def probe_shm() -> dict:
    try:
        stat = os.statvfs("/dev/shm")
    except OSError as err:
        return {"available": False, "reason": f"/dev/shm: {err.strerror}"}
    return {"available": True, "size_bytes": stat.f_frsize * stat.f_blocks, "free_bytes": stat.f_frsize * stat.f_bavail}


def probe_system() -> dict:
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "in_container": os.path.exists("/.dockerenv"),
        "image_manifest": _read_json(f"{MANIFEST_DIR}/versions.json"),
    }


def _read_json(path: str):
    with contextlib.suppress(OSError, ValueError):
        return json.loads(_read(path))
    return None


PROBES = {
    "system": probe_system,
    "cpu": probe_cpu,
    "threads": probe_threads,
    "shm": probe_shm,
    "nvml": probe_nvml,
    "torch": probe_torch,
    "tensorflow": probe_tensorflow,
}


def run(name: str) -> dict:
    try:
        return PROBES[name]()
    except Exception as err:  # a probe reports, it never fails: the host decides what a failure means
        return {"available": False, "reason": f"{type(err).__name__}: {err}", "kind": "probe-error"}


def main(argv: list[str]) -> int:
    names = argv or ["all"]
    if names == ["all"]:
        names = list(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        print(f"probe.py: unknown probe {', '.join(unknown)}: choose from {', '.join(PROBES)} or all", file=sys.stderr)
        return 2
    result = {name: run(name) for name in names}
    print(json.dumps(result[names[0]] if len(names) == 1 else result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
