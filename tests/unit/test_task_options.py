"""Every task, every option, hostile values: bad input is one `labstack:` line and a non-zero exit, never a
traceback. The tasks and their options come from invoke itself (tasks.py's collection), so a new task or option is
scanned without a word changed here.

Each task runs in its own copy of the checkout, in an environment where anything that gets past the options fails
at once instead of working: no Docker daemon, no package index, no proxy to the internet, HOME and the cache in
a temporary folder, pytest only collecting. A value that is accepted and succeeds is a finding to judge: the ones
judged right are listed in ACCEPTED with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from invoke import Collection, FilesystemLoader

from labstack import ROOT
from labstack.errors import shown
from tests.invoking import checkout_copy, run_invoke

# The values a hostile (or tired) user gives an option; FILE and FOLDER become an existing file and an existing
# folder, for options that want the other one.
HOSTILE = {
    "word": "abc",
    "empty": "",
    "minus-one": "-1",
    "zero": "0",
    "nan": "nan",
    "inf": "inf",
    "huge": "1e999",
    "long": "x" * 5000,
    "control": "\x7f\u202e",
    "traversal": "../../etc/passwd",
    "a-file": "FILE",
    "a-folder": "FOLDER",
    "doubled": "all,all",
    "spaces": " torch ",
}
BARE = "bare"  # a flag given alone

# Successes judged right: (task, option, value) -> why accepting it is right.
ACCEPTED: dict[tuple[str, str, str], str] = {
    ("test", "--unit", BARE): "runs the unit tests, its job (in the scan pytest only collects them)",
    ("data", "--generate", BARE): "writes the stand-in dataset into the copy's data folder, its job",
    ("data", "--verify", BARE): "checks the data folder --generate has just written, its job",
    ("data", "--record", BARE): "records the checksums of the data folder's files, its job",
}

pytestmark = pytest.mark.scan

REPORT_VARIABLE = "LABSTACK_SCAN_REPORT"  # a file: the scan writes every command line's outcome there as JSON
TIMEOUT = 60  # seconds for one command line: more means it started real work the environment did not stop
DEAD_PROXY = "http://127.0.0.1:9"


def task_options() -> list[tuple[str, str, bool]]:
    """(task, --option, is a flag) for every option of every task in tasks.py, as invoke parses them."""
    module, _ = FilesystemLoader(start=str(ROOT)).load("tasks")
    options = []
    for context in Collection.from_module(module).to_contexts():
        for argument in context.args.values():
            flag = next(f for f, a in context.flags.items() if a is argument and f.startswith("--"))
            options.append((context.name, flag, argument.kind is bool))
    return options


OPTIONS = task_options()


def scan_environment(tmp: Path) -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("INVOKE_", "LABSTACK_", "COMPOSE_", "PIP_", "UV_", "DOCKER_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    (tmp / "home").mkdir()
    return {
        **environ,
        "HOME": str(tmp / "home"),
        "XDG_CACHE_HOME": str(tmp / "home" / ".cache"),
        "LABSTACK_CACHE": str(tmp / "cache"),
        "LABSTACK_REPOSITORY": "scan.invalid/labstack",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": DEAD_PROXY + "/simple",
        "PIP_NO_INDEX": "1",
        "PIP_NO_INPUT": "1",
        "UV_OFFLINE": "1",  # uv (labstack's resolver) answers from its empty cache at once, without retrying
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        **{name: DEAD_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
        "PYTEST_ADDOPTS": "--collect-only -q",  # `invoke test` with an accepted value: its pytest only collects
    }


def command_lines(task: str, paths: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(option, value name, command line) for one task."""
    lines = []
    for name, flag, is_flag in OPTIONS:
        if name != task:
            continue
        if is_flag:
            lines.append((flag, BARE, [task, flag]))
        else:
            for value_name, value in HOSTILE.items():
                lines.append((flag, value_name, [task, flag, paths.get(value, value)]))
    return lines


def scan_task(task: str, pristine: Path, tmp: Path, environ: dict[str, str]) -> dict:
    """Every hostile command line of one task, in its own copy of the checkout; ../../ from the copy stays in tmp."""
    area = tmp / task
    copy = area / "work" / "checkout"
    shutil.copytree(pristine, copy, symlinks=True)
    (area / "a-file").write_text("a file, not a folder\n")
    (area / "a-folder").mkdir()
    lines = command_lines(task, {"FILE": str(area / "a-file"), "FOLDER": str(area / "a-folder")})
    (area / "jobs.json").write_text(json.dumps({"timeout": TIMEOUT, "jobs": [argv for _, _, argv in lines]}))
    subprocess.run(
        [sys.executable, str(copy / "tests" / "forked_invoke.py"), str(area / "jobs.json"), str(area / "results.json")],
        cwd=copy, env={**environ, "PYTHONPATH": str(copy)}, check=True, timeout=TIMEOUT * len(lines) + 60,
    )  # fmt: skip
    results = json.loads((area / "results.json").read_text())
    return {(task, flag, value_name): result for (flag, value_name, _), result in zip(lines, results, strict=True)}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("scan")
    pristine = checkout_copy(tmp / "pristine")
    environ = scan_environment(tmp)
    tasks = sorted({task for task, _, _ in OPTIONS})
    found: dict = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        for part in pool.map(lambda task: scan_task(task, pristine, tmp, environ), tasks):
            found.update(part)
    if os.environ.get(REPORT_VARIABLE):  # every outcome, for a person to read: what each value gave
        rows = [{"task": t, "option": f, "value": v, **result} for (t, f, v), result in found.items()]
        Path(os.environ[REPORT_VARIABLE]).write_text(json.dumps(rows, indent=1))
    return found


def verdict(key: tuple[str, str, str], result: dict) -> str | None:
    """What is wrong with one command line's outcome, or None."""
    said = result["stdout"] + result["stderr"]
    lines = [shown(line) for line in result["stderr"].strip().splitlines()]
    if result["timed_out"]:
        return f"still running after {TIMEOUT} s: it started real work with this value"
    if "Traceback" in said:
        return f"a traceback, exit {result['code']}: {lines[-1] if lines else ''}"
    if result["code"] == 0:
        return None if key in ACCEPTED else "accepted and succeeded: refuse it, or list it in ACCEPTED with why"
    if not lines or not lines[-1].startswith("labstack: "):
        return f"exit {result['code']} without a last `labstack:` line: {lines[-1] if lines else '(nothing)'}"
    return None


def describe(key, result) -> str:
    task, flag, value_name = key
    return f"invoke {task} {flag} <{value_name}>: {verdict(key, result)}"


@pytest.mark.parametrize(("task", "flag"), [(t, f) for t, f, _ in OPTIONS], ids=[f"{t} {f}" for t, f, _ in OPTIONS])
def test_hostile_values_give_one_labstack_line_never_a_traceback(scan, task, flag):
    bad = [describe(key, result) for key, result in scan.items() if key[:2] == (task, flag) and verdict(key, result)]
    assert not bad, "\n".join(bad)


def test_every_task_and_option_is_scanned(scan):
    assert {key[:2] for key in scan} == {(task, flag) for task, flag, _ in OPTIONS}
    assert len(OPTIONS) > 50 and any(is_flag for _, _, is_flag in OPTIONS)


def test_accepted_values_are_still_accepted(scan):
    """A listed success that now fails (or a task or option that went away) means ACCEPTED is out of date."""
    stale = [key for key in ACCEPTED if key not in scan or scan[key]["code"] != 0]
    assert not stale, stale


def test_the_forked_runner_gives_what_the_command_line_gives(scan):
    """The scan's children run invoke's own program as `python -m invoke` does: the same line, the same code."""
    key = ("validate", "--jobs", "word")
    real = run_invoke("validate", "--jobs", HOSTILE["word"], env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert (scan[key]["code"], scan[key]["stderr"]) == (real.returncode, real.stderr)
