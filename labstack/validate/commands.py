"""The body of `invoke validate` (tasks.py only declares it)."""

from __future__ import annotations

import time

from rich.console import Console

from labstack.errors import LabstackError, whole_number
from labstack.matrix import load_matrix
from labstack.paths import output_folder, revision
from labstack.validate.report import print_validation, target_line
from labstack.validate.run import all_passed, check_gpu_mode, default_jobs, plan_targets, write_report
from labstack.validate.run import validate as run_all


def validate(
    image: str | None, hosts: str, gpu: str = "auto", out: str = "reports/validate", jobs: str | int = 0
) -> None:
    check_gpu_mode(gpu)
    parallel = whole_number("jobs", jobs, minimum=0)  # 0: as many as the CPUs allow
    folder = output_folder("out", out, "reports/validate")  # before Docker is asked and the checks run
    targets = plan_targets(load_matrix(), image, hosts)
    console = Console(stderr=True)
    console.print(f"validating {', '.join(t.label for t in targets)} (--gpu {gpu})")
    started = time.monotonic()
    with console.status("running the checks"):
        results = run_all(targets, gpu, folder, parallel or default_jobs(), lambda r: console.print(target_line(r)))
    seconds = time.monotonic() - started
    report = write_report(results, gpu, seconds, folder, revision() or "unknown")
    print_validation(results)
    print(f"{len(targets)} targets in {seconds:.1f} s; report: {report}, JUnit: {report.parent / 'junit.xml'}")
    if not all_passed(results):
        failed = sum(r.count("fail") for r in results)
        raise LabstackError(f"{failed} checks failed: the reasons are above, and in {report}")
