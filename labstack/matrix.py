"""The version matrix (images/matrix.toml) and everything derived from it: tags, labels, lockfile paths."""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from labstack import ROOT
from labstack.errors import BadInput, LabstackError

MATRIX_PATH = ROOT / "images" / "matrix.toml"
VARIANTS = ("cpu", "cuda")
GB = 1000**3  # the unit of disk_gb and of every size labstack prints
REPOSITORY_PREFIX = "labstack"
# Namespace of the framework images only (the OS and base layers keep theirs): a lab tags for its own registry,
# and a second checkout on the same daemon builds beside the first without retagging its images.
REPOSITORY_VARIABLE = "LABSTACK_REPOSITORY"


@dataclass(frozen=True)
class Image:
    """One framework-by-variant cell of the matrix."""

    framework: str
    variant: str
    version: str
    import_name: str
    requirements: tuple[str, ...]
    disk_gb: float
    cuda: str | None = None
    cudnn: str | None = None
    min_driver: str | None = None
    # The lab layer's packages that exist per framework build (torchvision is built against one torch), and the
    # extra index that holds them for this variant (e.g. PyTorch's CPU index for the +cpu builds).
    lab_requirements: tuple[str, ...] = ()
    lab_index: str | None = None

    @property
    def name(self) -> str:
        return f"{self.framework}-{self.variant}"

    @property
    def repository(self) -> str:
        return f"{os.environ.get(REPOSITORY_VARIABLE) or REPOSITORY_PREFIX}/{self.framework}"

    @property
    def tag(self) -> str:
        suffix = f"cuda{self.cuda}" if self.variant == "cuda" else "cpu"
        return f"{self.version}-{suffix}"

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def dockerfile(self) -> Path:
        return ROOT / "images" / self.framework / "Dockerfile"

    @property
    def lockfile(self) -> Path:
        return ROOT / "images" / self.framework / f"requirements-{self.variant}.lock"

    def labels(self) -> dict[str, str]:
        """The `labstack.*` labels; OCI labels are added at build time (they need the git revision)."""
        labels = {
            "labstack.framework": self.framework,
            "labstack.framework_version": self.version,
            "labstack.variant": self.variant,
        }
        if self.variant == "cuda":
            labels |= {
                "labstack.cuda": self.cuda or "",
                "labstack.cudnn": self.cudnn or "",
                "labstack.min_driver": self.min_driver or "",
            }
        return labels


@dataclass(frozen=True)
class Matrix:
    python_version: str
    python_platform: str
    suite: str
    packages: tuple[str, ...]
    uid: int
    gid: int
    user: str
    cuda_package_patterns: tuple[str, ...]
    images: tuple[Image, ...]
    # The lab layer: the everyday stack every lab image has, then the lab's own packages (`invoke lab-add`).
    lab_requirements: tuple[str, ...] = ()
    lab_packages: tuple[str, ...] = ()
    # The notebook layer (JupyterLab), on top of the lab layer.
    notebook_requirements: tuple[str, ...] = ()

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(image.framework for image in self.images))

    def image(self, framework: str, variant: str) -> Image:
        """The one image of a framework and a variant, each a single name."""
        chosen_framework = self.one_framework(framework)
        (chosen_variant,) = choose("variant", variant, VARIANTS, many=False)
        return next(i for i in self.images if (i.framework, i.variant) == (chosen_framework, chosen_variant))

    def one_framework(self, framework: str) -> str:
        """The tasks that start one image (env, up-cpu, up-gpu) take one framework name, not a list or 'all'."""
        return choose("framework", framework, self.frameworks, many=False)[0]

    def select(self, framework: str = "all", variant: str = "cpu") -> list[Image]:
        """Images for a `--framework` / `--variant` pair; each may be a name, a comma list or 'all'."""
        frameworks = choose("framework", framework, self.frameworks)
        variants = choose("variant", variant, VARIANTS)
        return [i for i in self.images if i.framework in frameworks and i.variant in variants]

    def images_named(self, text: str) -> list[Image]:
        """Images named by matrix name (torch-cpu) or reference (labstack/torch:2.13.0-cpu), a comma list or 'all'."""
        by_name = {i.name: i for i in self.images}
        names = choose("image", text, tuple(by_name), aliases={i.ref: i.name for i in self.images})
        return [by_name[name] for name in names]

    def is_cuda_package(self, distribution: str) -> bool:
        name = distribution.lower().replace("_", "-")
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.cuda_package_patterns)


def choose(
    kind: str, value: str, known: Iterable[str], *, many: bool = True, aliases: dict[str, str] | None = None
) -> tuple[str, ...]:
    """The one reader of every name a user types (framework, variant, image, workload): a name, or with `many` a
    comma list or 'all'; `aliases` map other spellings to names. Anything else is one error with one wording."""
    known = tuple(known)
    aliases = aliases or {}
    words = [w.strip() for w in str(value).split(",")] if many else [str(value).strip()]
    words = [w for w in words if w]
    if many and words == ["all"]:
        return known
    chosen = [aliases.get(w, w) for w in words]
    unknown = [w for w, c in zip(words, chosen, strict=True) if c not in known]
    if unknown or not chosen:
        raise BadInput(
            f"unknown {kind} {', '.join(unknown) or repr(value)}: choose from {', '.join(known)}"
            + (" or all" if many else "")
        )
    return tuple(dict.fromkeys(chosen))


MATRIX_NAME = "images/matrix.toml"


class Section:
    """One table of the matrix with its path ([frameworks.torch]), so that a missing key or a value of the wrong
    type or shape is one BadInput naming the key, checked when the matrix is loaded, not a traceback later."""

    def __init__(self, data: object, path: str) -> None:
        self.path = path
        if not isinstance(data, dict):
            raise BadInput(f"{MATRIX_NAME}: [{path}] is {shown(data)}: make it a table ([{path}] and its keys)")
        self.data = data

    def where(self, key: str) -> str:
        return f"{MATRIX_NAME}: [{self.path}] {key}" if self.path else f"{MATRIX_NAME}: {key}"

    def raw(self, key: str, required: bool) -> object:
        if key not in self.data and required:
            where = f"[{self.path}]" if self.path else "the file"
            raise BadInput(f"{MATRIX_NAME}: {where} has no {key}: add it")
        return self.data.get(key)

    def table(self, key: str) -> Section:
        return Section(self.raw(key, True), f"{self.path}.{key}" if self.path else key)

    def text(self, key: str, required: bool = True) -> str | None:
        value = self.raw(key, required)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f'{self.where(key)} is {shown(value)}: give a quoted text, e.g. {key} = "..."')
        return value

    def number(self, key: str) -> int:
        value = self.raw(key, True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{self.where(key)} is {shown(value)}: give a whole number")
        return value

    def size(self, key: str) -> float:
        value = self.raw(key, True)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BadInput(f"{self.where(key)} is {shown(value)}: give a number of GB, e.g. {key} = 3")
        return float(value)

    def texts(self, key: str, required: bool = True) -> tuple[str, ...]:
        value = self.raw(key, required)
        if value is None and not required:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadInput(f'{self.where(key)} is {shown(value)}: give a list of quoted texts, e.g. ["a", "b"]')
        return tuple(value)


def shown(value: object) -> str:
    """A matrix value as the user wrote it (TOML-ish), short."""
    if isinstance(value, str):
        text = f'"{value}"'
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_matrix(text: str) -> Matrix:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"{MATRIX_NAME} is not valid TOML: {err}") from None
    top = Section(data, "")
    images = []
    frameworks = top.table("frameworks")
    for framework in frameworks.data:
        spec = frameworks.table(framework)
        variants = spec.table("variants")
        for variant in VARIANTS:
            cell = variants.table(variant)
            images.append(
                Image(
                    framework=framework,
                    variant=variant,
                    version=spec.text("version") or "",
                    import_name=spec.text("import_name") or "",
                    requirements=cell.texts("requirements"),
                    disk_gb=cell.size("disk_gb"),
                    cuda=cell.text("cuda", required=False),
                    cudnn=cell.text("cudnn", required=False),
                    min_driver=cell.text("min_driver", required=False),
                    lab_requirements=cell.texts("lab", required=False),
                    lab_index=cell.text("lab_index", required=False),
                )
            )
    python = top.table("python")
    base = top.table("base")
    lab = top.table("lab")
    return Matrix(
        python_version=python.text("version") or "",
        python_platform=python.text("platform") or "",
        suite=base.text("suite") or "",
        packages=base.texts("packages"),
        uid=base.number("uid"),
        gid=base.number("gid"),
        user=base.text("user") or "",
        cuda_package_patterns=top.table("cuda").texts("package_patterns"),
        images=tuple(images),
        lab_requirements=lab.texts("requirements"),
        lab_packages=lab.texts("packages", required=False),
        notebook_requirements=top.table("notebook").texts("requirements"),
    )


@cache
def load_matrix(path: Path = MATRIX_PATH) -> Matrix:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise LabstackError(f"cannot read the version matrix {path}: {err}") from err
    return parse_matrix(text)
