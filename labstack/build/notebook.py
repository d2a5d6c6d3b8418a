"""The notebook images: JupyterLab layered on a framework image, locked and built like the framework images.

`<framework image>-notebook` (e.g. labstack/torch:2.13.0-cpu-notebook). Its lockfile is resolved by uv with the
framework image's lockfile as constraints and keeps only the distributions the framework image lacks, so the
layer adds packages and never changes one (the Dockerfile also checks that against `pip freeze`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import tomllib
from pathlib import Path

from labstack import ROOT
from labstack.build.images import build_images, context_dir, oci_labels
from labstack.build.lock import HEADER, INPUTS_MARKER, Pin, compile_requirements, parse_lock, read_lock
from labstack.build.pipconf import PipSources
from labstack.build.wheelhouse import ensure_wheels, sync_dir
from labstack.engine import docker_build
from labstack.errors import LabstackError
from labstack.matrix import MATRIX_PATH, Image, Matrix

NOTEBOOK_DIR = ROOT / "images" / "notebook"
DOCKERFILE = NOTEBOOK_DIR / "Dockerfile"
SUFFIX = "-notebook"


def notebook_requirements(path: Path = MATRIX_PATH) -> tuple[str, ...]:
    """`[notebook] requirements` of images/matrix.toml."""
    try:
        return tuple(tomllib.loads(path.read_text())["notebook"]["requirements"])
    except (OSError, tomllib.TOMLDecodeError, KeyError) as err:
        raise LabstackError(f"cannot read [notebook] requirements from {path}: {err}") from err


def notebook_ref(image: Image) -> str:
    return f"{image.ref}{SUFFIX}"


def notebook_lockfile(image: Image) -> Path:
    return NOTEBOOK_DIR / f"requirements-{image.framework}-{image.variant}.lock"


def notebook_inputs(requirements: tuple[str, ...], framework_pins: list[Pin]) -> str:
    """A notebook lock is stale when its requirements or the framework pins it was constrained by change (the
    framework lockfile's comments do not count)."""
    payload = {
        "requirements": list(requirements),
        "framework_pins": sorted(p.requirement_line() for p in framework_pins),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def layer_pins(notebook_pins: list[Pin], framework_pins: list[Pin]) -> list[Pin]:
    """The pins the framework image lacks; a shared distribution at another version would be an upgrade."""
    installed = {p.name: p.version for p in framework_pins}
    changed = [
        f"{p.name} {installed[p.name]} -> {p.version}"
        for p in notebook_pins
        if installed.get(p.name, p.version) != p.version
    ]
    if changed:
        raise LabstackError(f"the notebook lock would change the framework image: {', '.join(changed)}")
    return [p for p in notebook_pins if p.name not in installed]


def render_lock(inputs: str, pins: list[Pin]) -> str:
    lines = "".join(pin.requirement_line() + "\n" for pin in sorted(pins, key=lambda p: p.name))
    return HEADER + INPUTS_MARKER + inputs + "\n" + lines


def lock_notebook(matrix: Matrix, image: Image, sources: PipSources) -> Path:
    """Resolve the notebook lock of one framework image, constrained by that image's own lock."""
    framework_pins = read_lock(image, matrix)
    requirements = notebook_requirements()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{p.name}=={p.version}\n" for p in framework_pins))
        text = compile_requirements(list(requirements), matrix, sources, constraints)
    _, pins = parse_lock(text)
    path = notebook_lockfile(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_lock(notebook_inputs(requirements, framework_pins), layer_pins(pins, framework_pins)))
    return path


def read_notebook_lock(image: Image, matrix: Matrix) -> list[Pin]:
    """The notebook layer's pins; a missing or stale lockfile says which `invoke notebook-lock` to run."""
    path = notebook_lockfile(image)
    fix = f"run `invoke notebook-lock --framework {image.framework}`"
    if not path.is_file():
        raise LabstackError(f"no notebook lockfile {path.name} for {image.ref}: {fix}")
    framework_pins = read_lock(image, matrix)  # the framework lock itself must be current
    inputs, pins = parse_lock(path.read_text())
    if inputs != notebook_inputs(notebook_requirements(), framework_pins):
        raise LabstackError(f"notebook lockfile {path.name} is stale (the matrix or the framework lock changed): {fix}")
    return pins


def stage_notebook_context(image: Image, wheels: dict[str, Path]) -> Path:
    context = context_dir(f"{image.name}{SUFFIX}")
    sync_dir(context / "wheels", {path.name: path for path in wheels.values()})
    shutil.copy2(notebook_lockfile(image), context / "requirements.lock")
    return context


def build_notebook_image(matrix: Matrix, image: Image, *, framework_built: bool = False) -> str:
    """Build (or find cached) the framework image unless the caller just built it, then its notebook layer;
    return the notebook image's ref."""
    pins = read_notebook_lock(image, matrix)
    if not framework_built:
        build_images(matrix, [image])  # cached layers: about a second when nothing changed
    wheels = ensure_wheels(pins, matrix)
    labels = oci_labels(image, image.ref) | {
        "org.opencontainers.image.title": f"{image.repository} (JupyterLab)",
        "labstack.notebook": ",".join(notebook_requirements()),
    }
    ref = notebook_ref(image)
    docker_build(DOCKERFILE, stage_notebook_context(image, wheels), ref, {"FRAMEWORK_IMAGE": image.ref}, labels)
    return ref
