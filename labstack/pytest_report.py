"""pytest plugin (`-p labstack.pytest_report --labstack-report FILE`): one JSON record per check, for `invoke
validate`'s table and JSON report. A check that did not run is a skip with its reason, never a pass."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

# Filled by the suite's fixtures: target label -> what ran there (image digest, host, driver, GPUs, versions).
ENVIRONMENT: dict[str, dict] = {}
TARGET_PARAMS = ("image", "target")
NOT_APPLICABLE = "got empty parameter set"


def pytest_addoption(parser):
    parser.addoption("--labstack-report", default=None, help="write one JSON record per check to this file")


def pytest_configure(config):
    path = config.getoption("--labstack-report")
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "labstack-recorder")


def describe(item) -> tuple[str, str | None]:
    """(check name, target label) of a test item: the target parameter names the column, not the check."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    target = next((_label(params[p]) for p in TARGET_PARAMS if p in params), None)
    others = [_label(v) for k, v in params.items() if k not in TARGET_PARAMS]
    name = item.originalname.removeprefix("test_")
    return (f"{name}[{','.join(others)}]" if others else name), target


def _label(value) -> str:
    return getattr(value, "name", None) or getattr(value, "label", None) or str(value)


def reason_of(report) -> str:
    """The one line a person needs: a skip's reason, or the first line of the failure's message."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash else str(report.longrepr)
    first = text.strip().splitlines()[0] if text.strip() else "failed"
    for prefix in ("AssertionError: ", "Failed: ", "E "):
        first = first.removeprefix(prefix)
    return first


class Recorder:
    def __init__(self, path: Path):
        self.path = path
        self.started = time.time()
        self.items: dict[str, tuple[str, str | None]] = {}
        self.results: dict[str, dict] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        self.items = {item.nodeid: describe(item) for item in items}

    def pytest_runtest_logreport(self, report):
        check, target = self.items.get(report.nodeid, (report.nodeid, None))
        entry = self.results.setdefault(
            report.nodeid, {"check": check, "target": target, "outcome": None, "reason": None, "seconds": 0.0}
        )
        entry["seconds"] = round(entry["seconds"] + report.duration, 3)
        if entry["outcome"] in ("fail", "skip"):
            return
        if report.skipped:
            entry["outcome"], entry["reason"] = "skip", reason_of(report)
        elif report.failed:
            entry["outcome"], entry["reason"] = "fail", reason_of(report)
        elif report.when == "call":
            entry["outcome"] = "pass"

    def pytest_sessionfinish(self, session, exitstatus):
        # pytest's placeholder for a check with no image of its kind here (a CUDA check in a CPU image's run)
        # is "not applicable", not a skip.
        results = [
            r for r in self.results.values() if r["outcome"] and not (r["reason"] or "").startswith(NOT_APPLICABLE)
        ]
        self.path.write_text(
            json.dumps(
                {
                    "seconds": round(time.time() - self.started, 2),
                    "exitstatus": int(exitstatus),
                    "environment": ENVIRONMENT,
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )
