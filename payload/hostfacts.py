#!/usr/bin/env python3
"""What a lab server holds and can run, for `invoke deploy`: one JSON line, gathered in one ssh round trip.

    python3 hostfacts.py REF [REF ...]

Runs on the server from source (`ssh HOST python3 - REF...` with labstack.payload.standalone("hostfacts") on
stdin), so nothing is copied there first. It reports Docker as this user reaches it (or the error it gave), the
free space where Docker keeps its images, what the server holds under each REF and REF-previous, every layer
it holds (so only the missing ones are counted against its disk), and its NVIDIA driver, device nodes and
container toolkit. Standard library only; it never raises: the host side decides what a failure means.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys

import probe  # the payload's NVML probe, carried along by labstack.payload.standalone

DOCKER_TIMEOUT = 30
PREVIOUS = "-previous"
HOOKS = ("nvidia-container-runtime-hook", "nvidia-container-runtime")


def docker(*args: str) -> tuple[int, str, str]:
    """The docker CLI as this user: (exit code, stdout, stderr); a daemon that hangs is an error, not a hang."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT)
    except FileNotFoundError:
        return 127, "", "docker: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"docker {args[0]} did not answer within {DOCKER_TIMEOUT} s: the Docker daemon hangs"
    return done.returncode, done.stdout, done.stderr


def free_bytes(path: str) -> tuple[str, int | None]:
    """Free space on the filesystem of `path`, or of its nearest parent this user may look up."""
    while True:
        try:
            stat = os.statvfs(path)
            return path, stat.f_frsize * stat.f_bavail
        except OSError:
            if path in ("/", ""):
                return path, None
            path = os.path.dirname(path.rstrip("/")) or "/"


def inspect(ids: list[str]) -> list[dict]:
    if not ids:
        return []
    code, out, _ = docker("image", "inspect", *ids)
    try:
        return json.loads(out) if code == 0 else []
    except ValueError:
        return []


def image_record(data: dict) -> dict:
    config = data.get("Config") or {}
    return {
        "id": data.get("Id", ""),
        "repo_digests": data.get("RepoDigests") or [],
        "labels": config.get("Labels") or {},
        "layers": (data.get("RootFS") or {}).get("Layers") or [],
        "size": data.get("Size", 0),
        "created": data.get("Created", ""),
    }


def images(refs: list[str]) -> tuple[dict, list[str]]:
    """{REF and REF-previous: what the server holds under that name, or None}, and every layer it holds."""
    names = [name for ref in refs for name in (ref, ref + PREVIOUS)]
    held = {}
    for name in names:
        found = inspect([name])
        held[name] = image_record(found[0]) if found else None
    code, out, _ = docker("image", "ls", "--quiet", "--no-trunc")
    ids = sorted(set(out.split())) if code == 0 else []
    layers = sorted({layer for data in inspect(ids) for layer in image_record(data)["layers"]})
    return held, layers


def nvidia() -> dict:
    """The driver as NVML sees it; where nvidia-ml-py is missing, as nvidia-smi reports it."""
    nvml = probe.run("nvml")
    nodes = sorted(glob.glob("/dev/nvidia*"))
    if nvml.get("kind") == "no-nvml-py" and not shutil.which("nvidia-smi") and not nodes:
        nvml = {"available": False, "kind": "no-driver", "reason": "no nvidia-smi and no /dev/nvidia* there"}
    elif nvml.get("kind") == "no-nvml-py" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,uuid,name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=DOCKER_TIMEOUT, check=True,
            ).stdout  # fmt: skip
            rows = [[part.strip() for part in line.split(",")] for line in out.strip().splitlines()]
            if rows:
                nvml = {
                    "available": True,
                    "driver_version": rows[0][0],
                    "devices": [{"index": i, "uuid": r[1], "name": r[2]} for i, r in enumerate(rows) if len(r) > 2],
                }
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "nvml": nvml,
        "nodes": nodes,
        "hooks_found": any(shutil.which(h) for h in HOOKS),
    }


def facts(refs: list[str]) -> dict:
    record = {"python": platform.python_version(), "user": os.environ.get("USER", ""), **nvidia()}
    code, out, err = docker("info", "--format", "{{json .}}")
    try:
        info = json.loads(out) if code == 0 else None
    except ValueError:
        info = None
    if not info or not info.get("ServerVersion"):  # a CLI that cannot reach its daemon still prints client info
        reason = (err.strip() or "; ".join((info or {}).get("ServerErrors") or []) or f"exit {code}").splitlines()
        record["docker"] = {"ok": False, "code": code, "error": reason[-1] if reason else f"exit {code}"}
        return record
    keep = (
        "ServerVersion", "DockerRootDir", "Driver", "DriverStatus", "Runtimes", "DiscoveredDevices", "OperatingSystem",
    )  # fmt: skip
    record["docker"] = {"ok": True, "info": {key: info.get(key) for key in keep}}
    record["free_at"], record["free_bytes"] = free_bytes(info.get("DockerRootDir") or "/var/lib/docker")
    record["images"], record["layers"] = images(refs)
    return record


def main(argv: list[str]) -> int:
    """`hostfacts.py REF...`: the facts; `hostfacts.py --image NAME`: what the server holds under one name."""
    if argv[:1] == ["--image"]:
        found = inspect(argv[1:2])
        print(json.dumps(image_record(found[0]) if found else None, sort_keys=True))
    else:
        print(json.dumps(facts(argv), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
