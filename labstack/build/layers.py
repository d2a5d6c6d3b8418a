"""The layers on top of a framework image, one mechanism for each: the lab layer (the everyday stack, the
framework's companions such as torchvision, the lab's own packages) and the notebook layer (JupyterLab) on top
of the lab layer.

`<framework image>-lab` and `<framework image>-notebook` (e.g. labstack/torch:2.13.0-cpu-lab). A layer's
lockfile (images/<layer>/requirements-<framework>-<variant>.lock) is resolved by uv with everything below it as
constraints and keeps only what is new, so a layer adds packages and never changes one; the Dockerfile checks that
again against `pip freeze`, and imports every package it was asked for. As with the framework locks, the CUDA lock
is resolved first and its shared pins constrain the CPU lock: the two differ only in CUDA packages and in what a
variant could not get, which the lock names (`# labstack-missing:`) and the image's manifest and labels repeat.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from labstack import ROOT
from labstack.build.images import BuildResult, build_images, context_dir, oci_labels
from labstack.build.lock import (
    HEADER,
    INPUTS_MARKER,
    Pin,
    ResolveError,
    compile_requirements,
    parse_lock,
    read_lock,
    verified_lock,
)
from labstack.build.pipconf import PipSources
from labstack.build.wheelhouse import ensure_wheels, sync_dir
from labstack.engine import connect, docker_build
from labstack.errors import BadInput, LabstackError, first_line
from labstack.matrix import Image, Matrix

MISSING_MARKER = "# labstack-missing: "
INSTALL_HELPER = ROOT / "images" / "common" / "install-layer.sh"


@dataclass(frozen=True)
class Layer:
    name: str
    parent: str  # "framework" or another layer's name
    title: str  # what the image's title label adds

    @property
    def folder(self) -> Path:
        return ROOT / "images" / self.name

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"


LAB = Layer("lab", "framework", "lab stack")
NOTEBOOK = Layer("notebook", "lab", "JupyterLab")
LAYERS = {layer.name: layer for layer in (LAB, NOTEBOOK)}
# What `--layer` accepts, bottom up: each includes the ones below it.
LAYER_NAMES = ("framework", *LAYERS)


def layers_up_to(name: str) -> list[Layer]:
    """The layers to build on the framework image for `--layer name` (none for "framework")."""
    return [LAYERS[n] for n in LAYER_NAMES[1 : LAYER_NAMES.index(name) + 1]]


def layer_ref(image: Image, layer: str) -> str:
    return image.ref if layer == "framework" else f"{image.ref}-{layer}"


def lockfile(image: Image, layer: Layer) -> Path:
    return layer.folder / f"requirements-{image.framework}-{image.variant}.lock"


def requirements(matrix: Matrix, image: Image, layer: Layer) -> tuple[str, ...]:
    if layer is LAB:
        return (*matrix.lab_requirements, *matrix.lab_packages, *image.lab_requirements)
    return matrix.notebook_requirements


def variant_requirements(image: Image, layer: Layer) -> tuple[str, ...]:
    """The requirements that exist per framework build; a variant may have to go without them (torchvision +cpu
    where PyTorch's CPU index is out of reach): they are recorded as missing rather than failing the lock."""
    return image.lab_requirements if layer is LAB else ()


def extra_index(image: Image, layer: Layer) -> str | None:
    return image.lab_index if layer is LAB else None


@dataclass(frozen=True)
class LayerLock:
    pins: list[Pin]
    missing: dict[str, str] = field(default_factory=dict)  # requirement -> why it is not in the lock


def inputs_digest(requirements: tuple[str, ...], index: str | None, parent_pins: list[Pin]) -> str:
    """A layer lock is stale when its requirements, its extra index or the pins below it change (comments in
    the locks below do not count)."""
    payload = {
        "requirements": list(requirements),
        "index": index,
        "parent_pins": sorted(p.requirement_line() for p in parent_pins),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def render_lock(inputs: str, lock: LayerLock) -> str:
    missing = "".join(f"{MISSING_MARKER}{req} -- {why}\n" for req, why in lock.missing.items())
    lines = "".join(pin.requirement_line() + "\n" for pin in sorted(lock.pins, key=lambda p: p.name))
    return HEADER + INPUTS_MARKER + inputs + "\n" + missing + lines


def parse_missing(text: str) -> dict[str, str]:
    missing = {}
    for line in text.splitlines():
        if line.startswith(MISSING_MARKER):
            requirement, _, why = line[len(MISSING_MARKER) :].partition(" -- ")
            missing[requirement.strip()] = why.strip()
    return missing


def parent_pins(matrix: Matrix, image: Image, layer: Layer) -> list[Pin]:
    """Every pin installed below `layer`: the framework lock, and the layers between (current, or an error)."""
    pins = read_lock(image, matrix)
    if layer.parent != "framework":
        below = LAYERS[layer.parent]
        pins += read_layer_lock(matrix, image, below).pins
    return pins


def added_pins(layer: Layer, pins: list[Pin], below: list[Pin]) -> list[Pin]:
    """The pins the image below lacks; a shared distribution at another version would be an upgrade."""
    installed = {p.name: p.version for p in below}
    changed = [
        f"{p.name} {installed[p.name]} -> {p.version}" for p in pins if installed.get(p.name, p.version) != p.version
    ]
    if changed:
        raise LabstackError(f"the {layer.name} lock would change the image below it: {', '.join(changed)}")
    return [p for p in pins if p.name not in installed]


def check_requirements(image: Image, layer: Layer, wanted: tuple[str, ...], below: list[Pin]) -> None:
    """Every requirement parses, and none asks for another version of a package the image below pins: that
    would change the framework image, which a layer never does."""
    installed = {p.name: p.version for p in below}
    for text in wanted:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as err:
            raise BadInput(f"{layer.name} requirement {text!r} is not a valid requirement: {first_line(err)}") from None
        name = canonicalize_name(requirement.name)
        if name in installed and not requirement.specifier.contains(installed[name], prereleases=True):
            raise BadInput(
                f"{layer.name} package {text} would change {name} {installed[name]}, which the {image.name} image "
                f"below it pins: ask for {name}=={installed[name]} or remove it from images/matrix.toml"
            )


def constraint_lines(pins: list[Pin]) -> str:
    # '===' is literal: '==2.13.0' would also admit torch 2.13.0+cpu under the CUDA torch.
    return "".join(f"{p.name}==={p.version}\n" for p in pins)


def resolve(
    matrix: Matrix, image: Image, layer: Layer, sources: PipSources, below: list[Pin], shared: list[Pin]
) -> LayerLock:
    """Resolve one layer lock against everything below it (and the CUDA twin's shared pins); what a variant
    cannot get is recorded as missing, with uv's reason."""
    wanted = requirements(matrix, image, layer)
    check_requirements(image, layer, wanted, below)
    optional = variant_requirements(image, layer)
    index = extra_index(image, layer)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(constraint_lines(below + shared))
        with_index = replace(sources, extra_index_urls=(*sources.extra_index_urls, index)) if index else sources
        missing: dict[str, str] = {}
        try:
            text = compile_requirements(list(wanted), matrix, with_index, constraints)
        except ResolveError as err:
            if not optional:
                raise
            why = unreachable_reason(err, index)
            missing = dict.fromkeys(optional, why)
            text = compile_requirements([r for r in wanted if r not in optional], matrix, sources, constraints)
            print(f"labstack: warning: the {image.name} {layer.name} lock goes without {', '.join(optional)}: {why}")
    _, pins = parse_lock(text)
    return LayerLock(added_pins(layer, pins, below), missing)


def unreachable_reason(err: ResolveError, index: str | None) -> str:
    """Why a per-variant package is not in the lock, worded the same on every run (uv fetches in no fixed order)."""
    if index and f"Failed to fetch: {index}" in err.stderr:
        return f"its index {index} is out of reach from this host ({err.last})"
    return f"no source this host reaches has a wheel for it ({err.last})"


def lock_layer(matrix: Matrix, framework: str, layer: Layer, sources: PipSources) -> list[Path]:
    """Write both lockfiles of a framework's layer: CUDA first, then CPU constrained by the CUDA lock's pins that
    are neither CUDA packages nor per-variant builds, so the two differ only there."""
    images = {i.variant: i for i in matrix.images if i.framework == framework}
    own = {canonicalize_name(Requirement(r).name) for i in images.values() for r in variant_requirements(i, layer)}
    written, shared = [], []
    for variant in ("cuda", "cpu"):
        image = images[variant]
        below = parent_pins(matrix, image, layer)
        lock = resolve(matrix, image, layer, sources, below, shared)
        shared = [p for p in lock.pins if p.name not in own and not matrix.is_cuda_package(p.name)]
        inputs = inputs_digest(requirements(matrix, image, layer), extra_index(image, layer), below)
        path = lockfile(image, layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_lock(inputs, lock))
        written.append(path)
    return written


def read_layer_lock(matrix: Matrix, image: Image, layer: Layer) -> LayerLock:
    """A layer's pins and what it goes without; a missing or stale lockfile says which `invoke lock` to run."""
    fix = f"run `invoke lock --layer {layer.name} --framework {image.framework}`"
    below = parent_pins(matrix, image, layer)  # the locks below must be current themselves
    inputs = inputs_digest(requirements(matrix, image, layer), extra_index(image, layer), below)
    text, pins = verified_lock(lockfile(image, layer), inputs, f"{layer.name} lockfile", fix)
    return LayerLock(pins, parse_missing(text))


def claimed(matrix: Matrix, image: Image, layer: Layer, lock: LayerLock) -> list[str]:
    """What a layer holds, and so says it holds: what was asked for, less what its lock had to go without."""
    return [r for r in requirements(matrix, image, layer) if r not in lock.missing]


def layer_labels(matrix: Matrix, image: Image, layer: Layer, lock: LayerLock) -> dict[str, str]:
    parent = layer_ref(image, layer.parent)
    labels = oci_labels(image, parent) | {
        "org.opencontainers.image.title": f"{image.repository} ({layer.title})",
        "org.opencontainers.image.version": f"{image.tag}-{layer.name}",
        "labstack.layer": layer.name,
        f"labstack.{layer.name}": ",".join(claimed(matrix, image, layer, lock)),
    }
    if layer is LAB:
        # Every lab image says what it goes without (empty when nothing), so a look at the labels is enough.
        labels["labstack.lab.missing"] = "; ".join(f"{req}: {why}" for req, why in lock.missing.items())
    return labels


def stage_layer_context(
    image: Image, layer: Layer, wheels: dict[str, Path], lock: LayerLock, present: list[str]
) -> Path:
    """The layer's build context: its wheels (hard links), lockfile, the requirement names to import, what it
    goes without, and the install helper."""
    context = context_dir(f"{image.name}-{layer.name}")
    sync_dir(context / "wheels", {path.name: path for path in wheels.values()})
    shutil.copy2(lockfile(image, layer), context / "requirements.lock")
    shutil.copy2(INSTALL_HELPER, context / INSTALL_HELPER.name)
    (context / "requirements.txt").write_text("".join(f"{r}\n" for r in present))
    (context / "missing.txt").write_text("".join(f"{req} -- {why}\n" for req, why in lock.missing.items()))
    return context


def build_layer(matrix: Matrix, image: Image, layer: Layer, *, parent_built: bool = False) -> BuildResult:
    """Build (cached layers: seconds when nothing changed) one layer on the image below it, building that first
    unless the caller just did; return its size and time."""
    lock = read_layer_lock(matrix, image, layer)
    if not parent_built:
        if layer.parent == "framework":
            build_images(matrix, [image])
        else:
            build_layer(matrix, image, LAYERS[layer.parent])
    wheels = ensure_wheels(lock.pins, matrix, extra_index=extra_index(image, layer))
    context = stage_layer_context(image, layer, wheels, lock, claimed(matrix, image, layer, lock))
    parent, ref = layer_ref(image, layer.parent), layer_ref(image, layer.name)
    seconds = docker_build(
        layer.dockerfile, context, ref, {"PARENT_IMAGE": parent}, layer_labels(matrix, image, layer, lock)
    )
    client = connect()
    size = int(client.images.get(ref).attrs["Size"])
    below = int(client.images.get(parent).attrs["Size"])
    return BuildResult(image, size, seconds, layer=layer.name, added_bytes=size - below)
