"""`invoke lab-add NAME[==VERSION]`: add one package to the lab's list in images/matrix.toml, pinned, and re-lock
every lab and notebook lock; anything that fails puts the matrix and the locks back as they were."""

from __future__ import annotations

import re
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from labstack.build.layers import (
    LAB,
    LAYERS,
    NOTEBOOK,
    check_requirements,
    constraint_lines,
    lock_layer,
    lockfile,
    parent_pins,
)
from labstack.build.lock import compile_requirements, parse_lock
from labstack.build.pipconf import PipSources
from labstack.errors import BadInput, LabstackError, first_line
from labstack.matrix import MATRIX_PATH, Matrix, load_matrix, parse_matrix

SECTION = re.compile(r"^\[lab\][ \t]*$", re.MULTILINE)
PACKAGES = re.compile(r"^packages[ \t]*=[ \t]*\[[^\]]*\]", re.MULTILINE)


def parse_new(text: str, matrix: Matrix) -> Requirement:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as err:
        raise BadInput(f"{text!r} is not a package requirement (NAME or NAME==VERSION): {first_line(err)}") from None
    if requirement.url or requirement.marker:
        raise BadInput(f"{text}: give a package from an index (NAME or NAME==VERSION), without a URL or marker")
    name = canonicalize_name(requirement.name)
    listed = [*matrix.lab_requirements, *matrix.lab_packages, *(r for i in matrix.images for r in i.lab_requirements)]
    for entry in listed:
        if canonicalize_name(Requirement(entry).name) == name:
            raise BadInput(f"{name} is already in the lab list as {entry} (images/matrix.toml)")
    return requirement


def with_packages(text: str, packages: list[str]) -> str:
    """The matrix text with `[lab] packages` replaced, everything else (comments included) untouched."""
    section = SECTION.search(text)
    if section is None:
        raise LabstackError(f"{MATRIX_PATH} has no [lab] section to add packages to")
    end = re.compile(r"^\[", re.MULTILINE).search(text, section.end())
    body_end = end.start() if end else len(text)
    line = "packages = [" + ", ".join(f'"{p}"' for p in packages) + "]"
    found = PACKAGES.search(text, section.end(), body_end)
    if found:
        new = text[: found.start()] + line + text[found.end() :]
    else:
        new = text[:body_end].rstrip("\n") + "\n" + line + "\n\n" + text[body_end:]
    if tuple(tomllib.loads(new)["lab"]["packages"]) != tuple(packages):
        raise LabstackError(f"could not rewrite [lab] packages in {MATRIX_PATH}: edit it by hand")
    return new


def pinned(requirement: Requirement, matrix: Matrix, sources: PipSources) -> str:
    """NAME==VERSION: the version given, else the newest that fits on top of the lab image with the most pins
    below the notebook (framework and lab locks). Re-locking every lab image then proves it fits them all."""
    if any(spec.operator in ("==", "===") for spec in requirement.specifier):
        return str(requirement)
    installed = {image.name: parent_pins(matrix, image, NOTEBOOK) for image in matrix.images}
    below = max(installed.values(), key=len)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(constraint_lines(below))
        _, pins = parse_lock(compile_requirements([str(requirement)], matrix, sources, constraints))
    name = canonicalize_name(requirement.name)
    version = next(p.version for p in pins if p.name == name)
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{name}{extras}=={version}"


def add_lab_package(text: str, sources: PipSources, path: Path = MATRIX_PATH) -> str:
    """Add the package pinned, re-lock the lab and notebook layers of every framework; return the pin."""
    matrix = load_matrix(path)
    requirement = parse_new(text, matrix)
    for image in matrix.images:  # a version that would change a framework pin is refused before uv runs
        check_requirements(image, LAB, (str(requirement),), parent_pins(matrix, image, LAB))
    pin = pinned(requirement, matrix, sources)
    original = path.read_text()
    locks = {lockfile(i, layer): lockfile(i, layer).read_text() for i in matrix.images for layer in LAYERS.values()}
    try:
        path.write_text(with_packages(original, [*matrix.lab_packages, pin]))
        load_matrix.cache_clear()
        updated = parse_matrix(path.read_text())
        for framework in updated.frameworks:
            for layer in LAYERS.values():
                for written in lock_layer(updated, framework, layer, sources):
                    print(f"wrote {written.relative_to(written.parents[2])}")
    except BaseException:
        path.write_text(original)
        for lock, content in locks.items():
            lock.write_text(content)
        load_matrix.cache_clear()
        raise
    print(f"added {pin} to [lab] packages in {path.name}; `invoke build` rebuilds the lab and notebook layers")
    return pin
