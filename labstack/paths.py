"""Where labstack keeps things: the checkout, the cache outside it, the reports, and the checkout's revision."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from labstack import ROOT

REPORTS_DIR = ROOT / "reports"
CACHE_VARIABLE = "LABSTACK_CACHE"


def cache_dir() -> Path:
    """Outside the checkout, so a fresh clone (CI) reuses the wheels: LABSTACK_CACHE, else XDG's cache."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labstack"


def git_output(*args: str) -> str:
    """What `git ARGS` prints in the checkout, or '' where it fails (no git, not a clone)."""
    try:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def revision() -> str | None:
    """The commit the checkout is at (recorded in every report and image label)."""
    return git_output("rev-parse", "HEAD") or None


def has_local_changes() -> bool:
    return bool(git_output("status", "--porcelain"))
