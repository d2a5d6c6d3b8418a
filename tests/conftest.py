"""Options and fixtures shared by every test folder.

`invoke test` builds the images of --variant and checks them; `invoke validate` passes --images (build
nothing, check these), --hosts (testinfra's own option: host specs for tests/host,
default local://) and --gpu auto|require|skip.
"""

from __future__ import annotations

import pytest

from labstack.matrix import load_matrix
from labstack.validate import GPU_MODES, suite_images

MATRIX = load_matrix()


def pytest_addoption(parser):
    parser.addoption(
        "--variant",
        default="all",
        help="image variants the image tests build and check: cpu, cuda or all (default: all)",
    )
    parser.addoption(
        "--images",
        default=None,
        help="check these built images (names like torch-cpu or refs, comma-separated) without building",
    )
    parser.addoption(
        "--gpu",
        default="auto",
        choices=GPU_MODES,
        help="auto: run GPU checks where NVML finds a GPU, else skip with the reason; require: fail instead; "
        "skip: leave them out (default: auto)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--gpu") != "skip":
        return
    kept = [item for item in items if item.get_closest_marker("gpu") is None]
    config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("gpu")])
    items[:] = kept


def selected_images(config):
    return suite_images(MATRIX, config.getoption("--images"), config.getoption("--variant"))


@pytest.fixture(scope="session")
def client():
    from labstack.engine import connect

    return connect()


@pytest.fixture(scope="session")
def built(request, client):
    """{image name: BuildResult or None}: the selected images, built (or found cached) once for the session.
    With --images nothing is built: a missing image fails the checks that need it."""
    images = selected_images(request.config)
    if request.config.getoption("--images"):
        from labstack.engine import image_or_none

        missing = [i.ref for i in images if image_or_none(client, i.ref) is None]
        if missing:
            pytest.fail(f"not built here: {', '.join(missing)}: run `invoke build`", pytrace=False)
        return dict.fromkeys(i.name for i in images)
    from labstack.build import build_images

    return {r.image.name: r for r in build_images(MATRIX, images)}
