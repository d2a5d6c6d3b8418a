"""`invoke` run as a user types it, from the checkout (or a copy of it), and the one `labstack:` line every failure
ends in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from labstack import ROOT
from labstack.matrix import REPOSITORY_VARIABLE

# A build in a copy may build a framework image and its layers from cache, or from nothing.
COPY_TIMEOUT = 900


def run_invoke(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def assert_one_line_failure(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("labstack: ")
    for word in words:
        assert word in lines[0], lines[0]


def checkout_copy(target: Path) -> Path:
    """The tracked files of this checkout as they are now (uncommitted edits included), without git or venvs."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def invoke_in_copy(copy: Path, namespace: str, *args: str) -> subprocess.CompletedProcess:
    """`invoke ARGS` in the copy: its tasks.py and its labstack/ (first on sys.path), its own image namespace."""
    env = {**os.environ, REPOSITORY_VARIABLE: namespace, "PYTHONPATH": str(copy)}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=copy, env=env, capture_output=True, text=True, timeout=COPY_TIMEOUT
    )
