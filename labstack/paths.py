"""Where labstack keeps things: the checkout, the cache outside it, the reports, and the checkout's revision."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from labstack import ROOT
from labstack.errors import BadInput, shown

REPORTS_DIR = ROOT / "reports"
CACHE_VARIABLE = "LABSTACK_CACHE"


def cache_dir() -> Path:
    """Outside the checkout, so a fresh clone (CI) reuses the wheels: LABSTACK_CACHE, else XDG's cache. A file where
    the folder (or one above it) would be is BadInput naming it, before anything is made in it."""
    if os.environ.get(CACHE_VARIABLE):
        folder, source = Path(os.environ[CACHE_VARIABLE]).expanduser(), CACHE_VARIABLE
    else:
        folder, source = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labstack", "the default"
    in_the_way = file_in_the_way(folder)
    if in_the_way:
        raise BadInput(
            f"the cache folder {folder} ({source}) {in_the_way}, not a folder: move the file away, or set "
            f"{CACHE_VARIABLE} to a folder"
        )
    return folder


def file_in_the_way(folder: Path) -> str:
    """Why `folder` cannot be a folder, for a message: it is a file ("is a file"), or a file stands where one above
    it would be ("cannot be made: PATH is a file"), or the file system refuses its name ("cannot be made: File name
    too long"); '' where it is a folder or can be made one."""
    for place in (folder, *folder.parents):
        try:
            exists = place.exists()
        except OSError as err:  # ENAMETOOLONG and its kind: exists() answers only "no such file" itself
            return f"cannot be made: {err.strerror or err}"
        if exists:
            if place.is_dir():
                return ""
            return "is a file" if place == folder else f"cannot be made: {place} is a file"
    return ""


def output_folder(option: str, text: str | Path, default: str) -> Path:
    """An output folder option, checked before any work starts (and before Docker is asked), so a bad one loses
    nothing: empty, a file where it (or a folder above it) would be, or a name the file system refuses is BadInput
    naming the option. Nothing is made here."""
    text = str(text)
    if not text.strip():
        raise BadInput(f"--{option} is empty: give a folder (default: {default})")
    folder = Path(text)
    in_the_way = file_in_the_way(folder)
    if in_the_way:
        raise BadInput(f"--{option} {shown(text)} {in_the_way}, not a folder: give a folder (default: {default})")
    return folder


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
