"""`invoke validate` as a user runs it, on a real image: what it reports is every check the image gets."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from labstack import ROOT
from labstack.validate.run import CHECKS_DIR


def collected_checks(image: str) -> set[str]:
    """The image checks pytest collects for one image (no Docker needed to collect); a check meant for other
    images is collected as an empty placeholder ([NOTSET]) that validate rightly does not report."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", str(CHECKS_DIR / "image"), "--images", image, "--collect-only", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    checks = set()
    for line in out.splitlines():
        if "::" not in line or "[NOTSET]" in line:
            continue
        name, _, ids = line.split("::")[-1].removeprefix("test_").partition("[")
        others = ids.rstrip("]").replace(image, "").strip("-")  # the report keeps a check's other parameters
        checks.add(f"{name}[{others}]" if others else name)
    return checks


def test_gpu_skip_runs_every_image_check_and_they_pass(images, tmp_path):
    """The bug this guards: `--gpu skip` deselected the image checks too, and validate reported nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "validate", "--image", "tensorflow-cpu", "--hosts", "none", "--gpu", "skip",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (target,) = json.loads((tmp_path / "report.json").read_text())["targets"]
    recorded = {r["check"]: r["outcome"] for r in target["results"]}
    assert set(recorded) == collected_checks("tensorflow-cpu")
    assert set(recorded.values()) == {"pass"}, recorded


def validate_host(host: str, out) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "validate", "--image", "none", "--hosts", host, "--gpu", "skip",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    (target,) = json.loads((out / "report.json").read_text())["targets"]
    return target["results"]


@pytest.mark.parametrize("state", ["missing", "stopped"])
def test_a_container_host_that_is_missing_or_stopped_gets_dockers_advice_not_ssh(os_image, tmp_path, state):
    name = f"labstack-msg-{uuid.uuid4().hex[:8]}"
    if state == "stopped":
        subprocess.run(["docker", "create", "--name", name, "--entrypoint", "true", os_image], capture_output=True,
                       check=True)  # fmt: skip
    try:
        results = validate_host(f"docker://{name}", tmp_path)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
    reasons = {r["reason"] for r in results if r["outcome"] == "fail"}
    expected = (
        f"no container {name} on this Docker: `docker ps` lists the running ones; give one of them"
        if state == "missing"
        else f"the container {name} is not running: start it (`docker start {name}`), or give another"
    )
    assert reasons == {expected}, reasons
