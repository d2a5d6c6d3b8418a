"""`invoke validate`: the testinfra suite in tests/ against images and hosts, in parallel, and its report.

Each target (an image, or a host given as a testinfra spec: local://, ssh://user@host) runs in its own pytest
process, so an unreachable host fails on its own while the others finish. Each process writes JUnit XML and
a JSON record per check (labstack.pytest_report); they are merged into one table, junit.xml and report.json.
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
from labstack.errors import LabstackError
from labstack.matrix import Image, Matrix

GPU_MODES = ("auto", "require", "skip")
HOST_SCHEMES = ("local", "ssh", "paramiko", "docker")
TARGET_TIMEOUT = 900
PROBE_SOURCE = (ROOT / "scripts" / "probe.py").read_text()
CHECKS_SOURCE = (ROOT / "scripts" / "checks.py").read_text()


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
    if mode not in GPU_MODES:
        raise LabstackError(f"unknown --gpu {mode!r}: choose from {', '.join(GPU_MODES)}", code=2)
    return mode


def gpu_gate(mode: str, problem: str | None) -> tuple[str, str | None]:
    """What a GPU check does on a target: 'run'; 'skip' with the reason (auto); 'fail' with it (require)."""
    if mode == "skip":
        return "skip", "GPU checks left out (--gpu skip)"
    if problem is None:
        return "run", None
    return ("fail" if mode == "require" else "skip"), problem


def apply_gpu_gate(mode: str, problem: str | None) -> None:
    """In a test: skip (auto) or fail (require) a GPU check that cannot run here, always with the reason."""
    import pytest

    decision, reason = gpu_gate(mode, problem)
    if decision == "skip":
        pytest.skip(reason)
    if decision == "fail":
        pytest.fail(f"--gpu require: {reason}", pytrace=False)


def suite_images(matrix: Matrix, names: str | None, variant: str) -> list[Image]:
    """The images a test session checks: those named (--images) or the matrix cells of --variant."""
    return images_by_names(matrix, names) if names else matrix.select("all", variant)


def host_label(spec: str) -> str:
    scheme, _, rest = spec.partition("://")
    return rest.rstrip("/") or scheme


def parse_hosts(text: str) -> list[Target]:
    targets = []
    for spec in (s.strip() for s in text.split(",")):
        if not spec:
            continue
        scheme = spec.partition("://")[0] if "://" in spec else ""
        if scheme not in HOST_SCHEMES:
            raise LabstackError(
                f"bad host {spec!r}: write local://, ssh://[user@]host[:port] or docker://container", code=2
            )
        targets.append(Target("host", spec, host_label(spec)))
    return targets


def images_by_names(matrix: Matrix, text: str) -> list[Image]:
    """Images named by matrix name (torch-cpu) or reference (labstack/torch:2.13.0-cpu), comma-separated."""
    known = {i.name: i for i in matrix.images} | {i.ref: i for i in matrix.images}
    chosen = []
    for name in (n.strip() for n in text.split(",")):
        if name == "all":
            chosen.extend(matrix.images)
        elif name in known:
            chosen.append(known[name])
        elif name:
            raise LabstackError(
                f"unknown image {name!r}: choose from {', '.join(i.name for i in matrix.images)} or their refs "
                f"({matrix.images[0].ref}, ...)",
                code=2,
            )
    return list(dict.fromkeys(chosen))


def existing_images(client, matrix: Matrix, text: str | None) -> list[Image]:
    """The images to validate: those named, or every matrix image built here. Validate builds nothing."""
    from labstack.engine import image_or_none

    if text:
        images = images_by_names(matrix, text)
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


def probe_command(python: str, name: str, timeout: int = 120) -> tuple[str, list[str]]:
    """A testinfra `host.run` command line running a probe from source: nothing needs copying to the target."""
    return "timeout %s %s -c %s %s", [str(timeout), python, PROBE_SOURCE, name]


def run_json(host, command: str, args: list[str]) -> dict:
    """Run a command that prints one JSON line on a testinfra host; a failure is an assertion with stderr."""
    result = host.run(command, *args)
    lines = result.stdout.strip().splitlines()
    assert result.rc == 0 and lines, f"command failed (rc {result.rc}): {result.stderr.strip()[-500:]}"
    return json.loads(lines[-1])


def pytest_command(target: Target, gpu: str, out: Path) -> list[str]:
    if target.kind == "image":
        where = ["tests/image", "tests/gpu", "--images", target.spec]
    else:
        where = ["tests/host", "--hosts", target.spec]
    return [
        sys.executable, "-m", "pytest", *where, "-m", "not build and not bench", "--gpu", gpu, "-q",
        "-p", "no:cacheprovider",
        "-p", "labstack.pytest_report", "--labstack-report", str(out / f"{target.label}.json"),
        "--junitxml", str(out / f"junit-{target.label}.xml"), "-o", f"junit_suite_name={target.label}",
    ]  # fmt: skip


def run_target(target: Target, gpu: str, out: Path) -> TargetResult:
    """One pytest process for one target; a crash or timeout becomes a failed check, not a lost target."""
    safe = Target(target.kind, target.spec, target.label.replace("/", "_").replace(":", "_"))
    command = pytest_command(safe, gpu, out)
    record = out / f"{safe.label}.json"
    started = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TARGET_TIMEOUT)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
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


def validate(targets: list[Target], gpu: str, out: Path, jobs: int, on_done=None) -> list[TargetResult]:
    """Run every target, `jobs` at a time; `on_done(result)` is called as each finishes."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[Target, TargetResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_target, t, gpu, out): t for t in targets}
        for future in as_completed(futures):
            result = future.result()
            results[result.target] = result
            if on_done:
                on_done(result)
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
    host_targets = parse_hosts(hosts) if hosts and hosts != "none" else []
    if images == "none":
        image_targets = []
    else:
        from labstack.engine import connect

        if images:
            images_by_names(matrix, images)  # a typo is reported before Docker is needed
        image_targets = [Target("image", i.name, i.name) for i in existing_images(connect(), matrix, images)]
    if not image_targets and not host_targets:
        raise LabstackError("nothing to validate: name --image and/or --hosts", code=2)
    return image_targets + host_targets
