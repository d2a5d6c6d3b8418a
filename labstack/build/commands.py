"""The bodies of `invoke lock`, `base`, `build`, `wheels` and `lab-add` (tasks.py only declares them)."""

from __future__ import annotations

from labstack.build.base import check_pinned, ensure_base
from labstack.build.images import build_images
from labstack.build.labadd import add_lab_package
from labstack.build.layers import (
    LAYER_NAMES,
    LAYERS,
    build_layer,
    extra_index,
    layers_up_to,
    lock_layer,
    read_layer_lock,
)
from labstack.build.lock import lock_framework, read_lock
from labstack.build.pipconf import host_pip_sources
from labstack.build.report import print_build_summary
from labstack.build.wheelhouse import ensure_wheels, wheelhouse_dir
from labstack.engine import connect
from labstack.matrix import choose, load_matrix


def one_layer(layer: str) -> str:
    return choose("layer", layer, LAYER_NAMES, many=False)[0]


def lock(framework: str = "all", layer: str = "framework") -> None:
    """Re-lock one layer of the chosen frameworks; the layers above it become stale and say so."""
    layer = one_layer(layer)
    matrix = load_matrix()
    frameworks = dict.fromkeys(i.framework for i in matrix.select(framework, "all"))  # names checked before pip runs
    sources = host_pip_sources()
    for name in frameworks:
        if layer == "framework":
            written = lock_framework(matrix, name, sources)
        else:
            written = lock_layer(matrix, name, LAYERS[layer], sources)
        for path in written:
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
    layer: str = "lab",
) -> None:
    """The framework images, then each layer up to `layer` on them; one table of sizes and times at the end."""
    layers = layers_up_to(one_layer(layer))
    matrix = load_matrix()
    images = matrix.select(framework, variant)
    for image in images:  # every lock is checked before the first layer is built
        for each in layers:
            read_layer_lock(matrix, image, each)
    results = build_images(matrix, images, refresh_base=refresh_base, from_image=from_image)
    for each in layers:
        results += [build_layer(matrix, image, each, parent_built=True) for image in images]
    print_build_summary(results)


def wheels(framework: str = "all", variant: str = "all") -> None:
    """Every wheel of the chosen images and of their layers, so a later build needs no network."""
    matrix = load_matrix()
    for image in matrix.select(framework, variant):
        found = ensure_wheels(read_lock(image, matrix), matrix)
        for layer in LAYERS.values():
            pins = read_layer_lock(matrix, image, layer).pins
            found |= ensure_wheels(pins, matrix, extra_index=extra_index(image, layer))
        print(f"{image.ref} and its layers: {len(found)} wheels verified in {wheelhouse_dir()}")


def lab_add(requirement: str) -> None:
    add_lab_package(requirement, host_pip_sources())
