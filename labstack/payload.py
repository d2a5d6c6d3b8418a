"""The payload: the programs in payload/ that run inside every image and on bare hosts (probes, checks, the
benchmark, the trainer, the MNIST helper, the notebook starter, the build-time manifest). Standard library
only, plus the framework a program is about.

This module is the one place the host knows them: their folder here, their folder in the images, their
source (for `python3 -c` over ssh, where nothing is copied first) and the modules themselves (the host reuses
their pure logic and tables instead of keeping a second copy).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

from labstack import ROOT
from labstack.errors import LabstackError

PAYLOAD_DIR = ROOT / "payload"
# Where the images hold the payload (images/*/Dockerfile copy PAYLOAD_DIR there; compose files run it from there).
IN_IMAGE = PurePosixPath("/opt/labstack/payload")
# What each image's build writes about itself (payload/manifest.py); readable without starting Python.
MANIFEST_IN_IMAGE = IN_IMAGE.parent / "manifest"
PROBE_TIMEOUT = 60


def path(name: str) -> Path:
    """payload/NAME.py on this machine; a name that is not a payload program is a programming error."""
    found = PAYLOAD_DIR / f"{name}.py"
    if not found.is_file():
        raise ValueError(f"{name} is not a program of {PAYLOAD_DIR}")
    return found


def in_image(name: str) -> str:
    """The payload program NAME as a path inside a labstack image, e.g. /opt/labstack/payload/probe.py."""
    return str(IN_IMAGE / path(name).name)


# Every framework image (and every layer on it: lab, notebook, a lab's own image FROM one) carries it, with the
# payload; labstack/os and labstack/base, and any image not built by labstack, carry neither.
FRAMEWORK_LABEL = "labstack.framework"


def missing_payload(ref: str, labels: dict[str, str] | None) -> str | None:
    """Why `ref` cannot run what labstack runs in it (`python /opt/labstack/payload/...`), or None: an image that is
    not a labstack image would fail inside the container with tini's `exec python failed`, long after the start."""
    if (labels or {}).get(FRAMEWORK_LABEL):
        return None
    return (
        f"{ref} is not a labstack image (no {IN_IMAGE}, no {FRAMEWORK_LABEL} label): build one with `invoke build` "
        "and name it (torch-cpu), or build your own image FROM a labstack lab image"
    )


def source(name: str) -> str:
    """The program's own text."""
    return path(name).read_text()


def siblings(name: str) -> list[str]:
    """The payload programs NAME imports (`import threads`), theirs first, each once."""
    found: list[str] = []
    for imported in re.findall(r"^(?:import|from) (\w+)", source(name), re.M):
        if imported in programs() and imported not in found:
            found += [n for n in [*siblings(imported), imported] if n not in found]
    return found


def standalone(name: str) -> str:
    """The program as one text to run where nothing was copied (`python3 -c TEXT ARGS` over ssh): each payload
    program it imports is made a module from its own text first, then the program runs as __main__."""
    modules = [(sibling, source(sibling)) for sibling in siblings(name)]
    return (
        "import sys, types\n"
        f"for _name, _text in {modules!r}:\n"
        "    sys.modules[_name] = _module = types.ModuleType(_name)\n"
        "    exec(compile(_text, _name + '.py', 'exec'), _module.__dict__)\n"
        f"exec(compile({source(name)!r}, {path(name).name!r}, 'exec'), {{'__name__': '__main__'}})\n"
    )


def programs() -> list[str]:
    return sorted(p.stem for p in PAYLOAD_DIR.glob("*.py"))


def load(name: str) -> ModuleType:
    """A payload program imported as a module on the host, under its own name, as its siblings import it in the
    images (`import probe`): loading train and mnist gives one mnist, not two copies with two DataError types."""
    wanted = path(name).resolve()
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != wanted:
            raise LabstackError(f"cannot load the payload's {name}: another module named {name} is already loaded")
        return loaded
    sys.path.insert(0, str(PAYLOAD_DIR))
    try:
        return importlib.import_module(name)
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(PAYLOAD_DIR))


def run_probe(name: str, python: str = sys.executable) -> dict:
    """Run one probe on this machine in a separate process with a timeout, so a hung driver cannot hang
    labstack; a probe that cannot run is reported like one that found nothing: with the reason."""
    try:
        out = subprocess.run(
            [python, str(path("probe")), name], capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=True
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"available": False, "kind": "timeout", "reason": f"the {name} probe ran past {PROBE_TIMEOUT} s"}
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError) as err:
        return {"available": False, "kind": "probe-error", "reason": f"the {name} probe failed: {err}"}
