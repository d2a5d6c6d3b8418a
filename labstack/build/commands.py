"""The bodies of `invoke lock`, `base`, `build` and `wheels` (tasks.py only declares them)."""

from __future__ import annotations

from labstack.build.base import check_pinned, ensure_base
from labstack.build.images import build_images
from labstack.build.lock import lock_framework, read_lock
from labstack.build.notebook import build_notebook_image, lock_notebook
from labstack.build.pipconf import host_pip_sources
from labstack.build.report import print_build_summary
from labstack.build.wheelhouse import ensure_wheels, wheelhouse_dir
from labstack.engine import connect
from labstack.matrix import choose, load_matrix

# The layers an image can have: the framework image itself, and JupyterLab on top of it.
LAYERS = ("framework", "notebook")


def one_layer(layer: str) -> str:
    return choose("layer", layer, LAYERS, many=False)[0]


def lock(framework: str = "all", layer: str = "framework") -> None:
    layer = one_layer(layer)
    matrix = load_matrix()
    images = matrix.select(framework, "all")
    sources = host_pip_sources()
    if layer == "notebook":
        for image in images:
            print(f"wrote {lock_notebook(matrix, image, sources)}")
        return
    for name in dict.fromkeys(i.framework for i in images):
        for path in lock_framework(matrix, name, sources):
            print(f"wrote {path.relative_to(path.parents[2])}")


def base(refresh: bool = False, from_image: str | None = None) -> None:
    matrix = load_matrix()
    if from_image:
        check_pinned(from_image, matrix.suite)
    print(ensure_base(connect(), matrix, refresh=refresh, from_image=from_image))


def build(
    framework: str = "all",
    variant: str = "cpu",
    refresh_base: bool = False,
    from_image: str | None = None,
    layer: str = "framework",
) -> None:
    layer = one_layer(layer)
    matrix = load_matrix()
    images = matrix.select(framework, variant)
    results = build_images(matrix, images, refresh_base=refresh_base, from_image=from_image)
    print_build_summary(results)
    if layer == "notebook":
        for image in images:
            print(build_notebook_image(matrix, image, framework_built=True))


def wheels(framework: str = "all", variant: str = "all") -> None:
    matrix = load_matrix()
    for image in matrix.select(framework, variant):
        found = ensure_wheels(read_lock(image, matrix), matrix)
        print(f"{image.ref}: {len(found)} wheels verified in {wheelhouse_dir()}")
