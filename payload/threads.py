#!/usr/bin/env python3
"""labstack's thread rule: the frameworks size their thread pools for the CPUs this container may use.

OpenMP (torch), MKL, OpenBLAS (numpy) and TensorFlow size their pools from the CPUs they can see: affinity
at best, never the cgroup quota that `docker run --cpus N` sets. A container limited to 1 CPU on a 64-core
server then starts 64 threads that take turns on one CPU's worth of time. The images run `at_start()` at
every interpreter start (a .pth file in the venv, written by `install_startup_hook` at build time), so every
Python there, and every process it starts, sees the variables below sized to the limit.

    python3 threads.py                   print the limit and the variables this process would get (JSON)
    python3 threads.py --install-hook    write the startup hook into this Python's site-packages (image build)

Standard library only, and cheap: it runs before every Python program in the images. Pure functions take the
files and values they read as arguments, so tests can give them fake cgroup trees.
"""

from __future__ import annotations

import math
import os
import sys

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
# Each variable the limit fills in, with the variables its library falls back to when it is unset. A variable
# the user set is theirs, and so is one whose fallback they set: MKL and OpenBLAS take OMP_NUM_THREADS as their
# own default, and torch sizes its OpenMP pool from MKL's count, so filling MKL_NUM_THREADS beside a user's
# OMP_NUM_THREADS would overrule the user. TensorFlow reads only its own two (process_util.cc, local_device.cc).
VARIABLES: dict[str, tuple[str, ...]] = {
    "OMP_NUM_THREADS": (),
    "MKL_NUM_THREADS": ("OMP_NUM_THREADS",),
    "OPENBLAS_NUM_THREADS": ("OMP_NUM_THREADS", "GOTO_NUM_THREADS"),
    "TF_NUM_INTRAOP_THREADS": (),
    "TF_NUM_INTEROP_THREADS": (),
}
HOOK_MODULE = "labstack_threads"
# One line that starts with `import`, as .pth files want; the try keeps even a missing or broken module from
# printing at every start.
_GUARDED_CALL = f"try:\\n import {HOOK_MODULE}\\n {HOOK_MODULE}.at_start()\\nexcept Exception:\\n pass"
HOOK_LINE = f'import sys; exec("{_GUARDED_CALL}")\n'


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _own_cgroups(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller (None where absent)."""
    v2 = v1 = None
    for line in _read(proc_self_cgroup).splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and not controllers:
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(mount: str, path: str | None) -> list[str]:
    """The folders of `path` and of each of its parents under `mount`, the mount itself last. In a container
    the path is often the host's (/docker/ID) while the mount shows the container's own cgroup at its root:
    folders that do not exist are skipped by the callers."""
    parts = [p for p in (path or "").split("/") if p]
    return [os.path.join(mount, *parts[:depth]) for depth in range(len(parts), -1, -1)]


def _quota_v2(folder: str) -> float | None:
    quota, period = _read(os.path.join(folder, "cpu.max")).split()
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(folder: str) -> float | None:
    quota = int(_read(os.path.join(folder, "cpu.cfs_quota_us")))
    period = int(_read(os.path.join(folder, "cpu.cfs_period_us")))
    return None if quota <= 0 else quota / period


def cgroup_cpu_quota(root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> float | None:
    """CPUs' worth of time the cgroup quota allows this process (`docker run --cpus 1.5` gives 1.5), the
    tightest of its own cgroup and its parents, v2 (cpu.max) or v1 (cpu.cfs_quota_us / cpu.cfs_period_us);
    None when no quota applies or nothing can be read."""
    try:
        v2, v1 = _own_cgroups(proc_self_cgroup)
    except (OSError, ValueError):
        v2 = v1 = None
    folders = [(_quota_v2, folder) for folder in _ancestors(root, v2)]
    for mount in ("cpu", "cpu,cpuacct"):
        folders += [(_quota_v1, folder) for folder in _ancestors(os.path.join(root, mount), v1)]
    quotas = []
    for read, folder in folders:
        try:
            quotas.append(read(folder))
        except (OSError, ValueError):
            continue
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def usable_cpus(quota: float | None, affinity: int) -> int:
    """CPUs this process may use: its affinity (cpuset), cut to the quota rounded up (1.5 CPUs of time keep
    two threads busy part of the time), never below 1."""
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota)))


def affinity_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_limit() -> dict:
    """What this process may use, as read from this machine."""
    quota, affinity = cgroup_cpu_quota(), affinity_cpus()
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": affinity,
        "cgroup_cpu_quota": quota,
        "usable_cpus": usable_cpus(quota, affinity),
    }


def thread_environment(environ, usable: int, cpu_count: int | None) -> dict[str, str]:
    """The variables to add to `environ` so the thread pools fit `usable` CPUs: none when the limit is not
    below the machine's CPU count; else each of VARIABLES that neither the user nor its fallback has set."""
    if not cpu_count or usable >= cpu_count:
        return {}
    return {
        name: str(usable)
        for name, fallbacks in VARIABLES.items()
        if not any(environ.get(user) for user in (name, *fallbacks))
    }


def apply(environ=os.environ) -> dict[str, str]:
    """Set the thread variables in this process's environment (so in every process it starts); what was set."""
    limit = cpu_limit()
    added = thread_environment(environ, limit["usable_cpus"], limit["cpu_count"])
    environ.update(added)
    return added


def at_start() -> None:
    """The startup hook's call: whatever goes wrong here, Python must start as if it were not there."""
    try:  # noqa: SIM105 (contextlib.suppress would cost an import at every Python start)
        apply()
    except Exception:
        pass


def install_startup_hook(site_packages: str, source: str) -> list[str]:
    """Make every start of this Python run at_start(): `source` (this file) linked into site-packages as a
    module of its own name, so nothing else of the payload becomes importable, and a .pth file that imports
    it. Not sitecustomize.py: a distribution's Python may ship its own, and there can be only one."""
    module = os.path.join(site_packages, f"{HOOK_MODULE}.py")
    hook = os.path.join(site_packages, f"{HOOK_MODULE}.pth")
    if os.path.lexists(module):
        os.remove(module)
    os.symlink(os.path.abspath(source), module)
    with open(hook, "w") as handle:
        handle.write(HOOK_LINE)
    return [module, hook]


def main(argv: list[str]) -> int:
    import json
    import sysconfig

    if argv == ["--install-hook"]:
        written = install_startup_hook(sysconfig.get_path("purelib"), __file__)
        print(json.dumps({"written": written}))
        return 0
    if argv:
        print("threads.py: usage: threads.py [--install-hook]", file=sys.stderr)
        return 2
    limit = cpu_limit()
    would = thread_environment(os.environ, limit["usable_cpus"], limit["cpu_count"])
    print(json.dumps({**limit, "environment": {name: os.environ.get(name) for name in VARIABLES}, "would_set": would}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
