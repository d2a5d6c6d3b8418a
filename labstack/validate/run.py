"""`invoke validate`: the checks in labstack/validate/checks against images and hosts, in parallel, and its report.

Each target (an image, or a host: local://, ssh://user@host, docker://container) runs in its own pytest process,
so an unreachable host fails on its own while the others finish. Each process writes JUnit XML and a JSON record
per check (the plugin's --labstack-report); they are merged into one table, junit.xml and report.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from labstack import ROOT
from labstack.children import Children
from labstack.engine import connect, image_or_none
from labstack.errors import BadInput, LabstackError
from labstack.gpu import GPU_MODES
from labstack.hosts import parse_hosts, ssh_config
from labstack.matrix import Image, Matrix, choose

CHECKS_DIR = Path(__file__).parent / "checks"
TARGET_TIMEOUT = 900


@dataclass(frozen=True)
class Target:
    kind: str  # "image" or "host"
    spec: str  # a matrix image name (torch-cpu) or a testinfra host spec
    label: str


@dataclass
class TargetResult:
    target: Target
    results: list[dict] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    seconds: float = 0.0
    junit: Path | None = None

    def count(self, outcome: str) -> int:
        return sum(r["outcome"] == outcome for r in self.results)


def check_gpu_mode(mode: str) -> str:
    return choose("--gpu", mode, GPU_MODES, many=False)[0]


def existing_images(client, matrix: Matrix, text: str | None) -> list[Image]:
    """The images to validate: those named, or every matrix image built here. Validate builds nothing."""
    if text:
        images = matrix.images_named(text)
        for image in images:
            if image_or_none(client, image.ref) is None:
                raise LabstackError(
                    f"{image.ref} is not built here: run `invoke build --framework {image.framework} --variant "
                    f"{image.variant}` (validate builds nothing)"
                )
        return images
    images = [i for i in matrix.images if image_or_none(client, i.ref) is not None]
    if not images:
        raise LabstackError("no labstack image is built here: run `invoke build` first (validate builds nothing)")
    return images


def pytest_command(target: Target, gpu: str, out: Path) -> list[str]:
    """One target's pytest run: the image checks (and GPU checks) of one image, or the host checks of one host.
    What runs is the folder; no marker expression keeps anything out."""
    if target.kind == "image":
        where = [str(CHECKS_DIR / "image"), str(CHECKS_DIR / "gpu"), "--images", target.spec]
    else:
        where = [str(CHECKS_DIR / "host"), "--hosts", target.spec]
    return [
        sys.executable, "-m", "pytest", *where, "--gpu", gpu, "-q", "-p", "no:cacheprovider",
        "-p", "labstack.validate.plugin", "--labstack-report", str(out / f"{target.label}.json"),
        "--junitxml", str(out / f"junit-{target.label}.xml"), "-o", f"junit_suite_name={target.label}",
    ]  # fmt: skip


def run_target(target: Target, gpu: str, out: Path) -> TargetResult:
    """One pytest process for one target; a crash or timeout becomes a failed check, not a lost target."""
    safe = Target(target.kind, target.spec, target.label.replace("/", "_").replace(":", "_"))
    command = pytest_command(safe, gpu, out)
    record = out / f"{safe.label}.json"
    started = time.monotonic()
    with running.start(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=TARGET_TIMEOUT)
            tail = (stdout + stderr).strip().splitlines()[-3:]
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            tail = [f"the checks of {target.label} ran past {TARGET_TIMEOUT} s and were stopped"]
    seconds = round(time.monotonic() - started, 1)
    result = TargetResult(target, seconds=seconds, junit=out / f"junit-{safe.label}.xml")
    if record.is_file():
        data = json.loads(record.read_text())
        result.results = data["results"]
        result.environment = data["environment"].get(target.label, {}) or next(iter(data["environment"].values()), {})
    if not result.results:
        result.results = [{"check": "suite", "target": target.label, "outcome": "fail", "reason": " | ".join(tail)}]
    return result


def merge_junit(results: list[TargetResult], path: Path) -> None:
    merged = ET.Element("testsuites")
    for result in results:
        if result.junit and result.junit.is_file():
            root = ET.parse(result.junit).getroot()
            for suite in [root] if root.tag == "testsuite" else list(root):
                suite.set("name", result.target.label)
                merged.append(suite)
    ET.ElementTree(merged).write(path, encoding="utf-8", xml_declaration=True)


running = Children()


def validate(targets: list[Target], gpu: str, out: Path, jobs: int, on_done=None) -> list[TargetResult]:
    """Run every target, `jobs` at a time; `on_done(result)` is called as each finishes."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[Target, TargetResult] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = {pool.submit(run_target, t, gpu, out): t for t in targets}
        for future in as_completed(futures):
            result = future.result()
            results[result.target] = result
            if on_done:
                on_done(result)
    except BaseException:  # Ctrl-C, SIGTERM: no target starts, the running ones stop, nothing is left behind
        pool.shutdown(wait=False, cancel_futures=True)
        running.stop_all()
        raise
    pool.shutdown()
    return [results[t] for t in targets]


def write_report(results: list[TargetResult], gpu: str, seconds: float, out: Path, revision: str) -> Path:
    merge_junit(results, out / "junit.xml")
    report = {
        "labstack_revision": revision,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu_mode": gpu,
        "seconds": round(seconds, 1),
        "passed": all_passed(results),
        "targets": [
            {
                "target": r.target.label,
                "kind": r.target.kind,
                "spec": r.target.spec,
                "seconds": r.seconds,
                "environment": r.environment,
                "results": r.results,
            }
            for r in results
        ],
    }
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def all_passed(results: list[TargetResult]) -> bool:
    return all(r.count("fail") == 0 for r in results)


def table_rows(results: list[TargetResult]) -> tuple[list[str], list[list[str]]]:
    """Check x target: 'pass' / 'FAIL' / 'skip' / '' (not applicable there), checks in first-seen order."""
    checks = list(dict.fromkeys(r["check"] for result in results for r in result.results))
    columns = [r.target.label for r in results]
    cells = {(result.target.label, r["check"]): r["outcome"] for result in results for r in result.results}
    symbols = {"pass": "pass", "fail": "FAIL", "skip": "skip"}
    rows = [[check] + [symbols.get(cells.get((col, check), ""), "") for col in columns] for check in checks]
    return columns, rows


def default_jobs() -> int:
    return max(2, min(4, os.cpu_count() or 2))


def plan_targets(matrix: Matrix, images: str | None, hosts: str) -> list[Target]:
    """Image targets (those named, or every matrix image built here; 'none' for hosts only), then hosts."""
    chosen = parse_hosts(hosts) if hosts and hosts != "none" else []
    if any(h.scheme == "ssh" for h in chosen):
        ssh_config()  # a wrong LABSTACK_SSH_CONFIG is one line here, not a failure of every host check
    host_targets = [Target("host", h.spec, h.label) for h in chosen]
    if images == "none":
        image_targets = []
    else:
        if images:
            matrix.images_named(images)  # a typo is reported before Docker is needed
        image_targets = [Target("image", i.name, i.name) for i in existing_images(connect(), matrix, images)]
    if not image_targets and not host_targets:
        raise BadInput("nothing to validate: name --image and/or --hosts")
    return image_targets + host_targets
