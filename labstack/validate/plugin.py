"""labstack's pytest plugin: what the checks `invoke validate` runs (labstack/validate/checks) and the developers'
tests share. pyproject's addopts load it (`-p labstack.validate.plugin`), and so does every pytest process of
`invoke validate`.

- Options: --images NAMES (check these built images, build nothing: what validate passes), --variant (the
  developers' suite builds the images of these variants, then checks them), --gpu auto|require|skip and
  --labstack-report FILE (one JSON record per check, for validate's table and report.json).
- The `only` marker: `@pytest.mark.only("cuda", frameworks=("torch",))` on a check (or `pytestmark`) gives it
  only those images, so the others do not get a skipped copy of it. Every test that takes `image` is
  parametrized over the selected images that way.
- The GPU gate: a GPU check that cannot run here skips with the reason (auto) or fails with it (require);
  --gpu skip deselects the checks marked `gpu`, and only those.
- Session fixtures `client` and `built`.

It imports nothing heavy at load time: on a bare GPU host the host checks run with pytest, testinfra and
nvidia-ml-py alone (no Docker SDK, no rich).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labstack.gpu import GPU_MODES, gpu_gate
from labstack.matrix import VARIANTS, Image, load_matrix


def pytest_addoption(parser):
    group = parser.getgroup("labstack")
    group.addoption(
        "--variant",
        default="all",
        help="image variants the developers' tests build and check: cpu, cuda or all (default: all)",
    )
    group.addoption(
        "--images",
        default=None,
        help="check these built images (names like torch-cpu or refs, comma-separated) without building",
    )
    group.addoption(
        "--gpu",
        default="auto",
        choices=GPU_MODES,
        help="auto: run GPU checks where NVML finds a GPU, else skip with the reason; require: fail instead; "
        "skip: leave them out (default: auto)",
    )
    group.addoption("--labstack-report", default=None, help="write one JSON record per check to this file")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "only(*variants, frameworks=None): check only the images of these variants (and frameworks); the others "
        "get no copy of the check",
    )
    path = config.getoption("--labstack-report")
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "labstack-recorder")


def selected_images(config) -> list[Image]:
    """The images a session checks: those named (--images) or the matrix cells of --variant."""
    matrix = load_matrix()
    names = config.getoption("--images")
    return matrix.images_named(names) if names else matrix.select("all", config.getoption("--variant"))


def images_for(definition, images: list[Image]) -> list[Image]:
    """The images a check asked for with `only` (all of them without it)."""
    marker = definition.get_closest_marker("only")
    variants = (marker.args if marker else ()) or VARIANTS
    frameworks = marker.kwargs.get("frameworks") if marker else None
    return [i for i in images if i.variant in variants and (frameworks is None or i.framework in frameworks)]


def parametrized_by_itself(metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc):
    if "image" in metafunc.fixturenames and not parametrized_by_itself(metafunc, "image"):
        images = images_for(metafunc.definition, selected_images(metafunc.config))
        metafunc.parametrize("image", images, ids=[i.name for i in images], indirect=True)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--gpu") != "skip":
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


def apply_gpu_gate(config, problem: str | None) -> None:
    """In a check: skip (auto) or fail (require) a GPU check that cannot run here, always with the reason."""
    decision, reason = gpu_gate(config.getoption("--gpu"), problem)
    if decision == "skip":
        pytest.skip(reason)
    if decision == "fail":
        pytest.fail(f"--gpu require: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def client():
    from labstack.engine import connect  # the Docker SDK: only where images are checked

    return connect()


@pytest.fixture(scope="session")
def built(request, client):
    """{image name: BuildResult or None}: the selected images, built (or found cached) once for the session.
    With --images nothing is built: a missing image fails the checks that need it."""
    from labstack.build.images import build_images  # the Docker SDK again: not on a bare GPU host
    from labstack.engine import image_or_none

    images = selected_images(request.config)
    if request.config.getoption("--images"):
        missing = [i.ref for i in images if image_or_none(client, i.ref) is None]
        if missing:
            pytest.fail(f"not built here: {', '.join(missing)}: run `invoke build`", pytrace=False)
        return dict.fromkeys(i.name for i in images)
    return {r.image.name: r for r in build_images(load_matrix(), images)}


@pytest.fixture
def image(request, built) -> Image:
    return request.param


@pytest.fixture(scope="session")
def lab_built(request, client, built) -> dict[str, str]:
    """{image name: lab image ref}: the lab layer of each selected image, built (or found cached) once for the
    session; with --images nothing is built, and only the lab images present here are checked."""
    from labstack.build.layers import LAB, build_layer, layer_ref  # Docker SDK: not on a bare GPU host
    from labstack.engine import image_or_none

    images = selected_images(request.config)
    if request.config.getoption("--images"):
        return {i.name: layer_ref(i, LAB.name) for i in images if image_or_none(client, layer_ref(i, LAB.name))}
    matrix = load_matrix()
    for image in images:
        build_layer(matrix, image, LAB, parent_built=True)
    return {i.name: layer_ref(i, LAB.name) for i in images}


# Filled by the suite's fixtures: target label -> what ran there (image digest, host, driver, GPUs, versions).
ENVIRONMENT: dict[str, dict] = {}
TARGET_PARAMS = ("image", "target")
NOT_APPLICABLE = "got empty parameter set"


def describe(item) -> tuple[str, str | None]:
    """(check name, target label) of a test item: the target parameter names the column, not the check."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    target = next((_label(params[p]) for p in TARGET_PARAMS if p in params), None)
    others = [_label(v) for k, v in params.items() if k not in TARGET_PARAMS]
    name = item.originalname.removeprefix("test_")
    return (f"{name}[{','.join(others)}]" if others else name), target


def _label(value) -> str:
    """A host's label (user@name:port: its name alone would merge hosts), an image's name, or the value."""
    return getattr(value, "label", None) or getattr(value, "name", None) or str(value)


def reason_of(report) -> str:
    """The one line a person needs: a skip's reason, or the first line of the failure's message."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash else str(report.longrepr)
    first = text.strip().splitlines()[0] if text.strip() else "failed"
    for prefix in ("AssertionError: ", "Failed: ", "E "):
        first = first.removeprefix(prefix)
    return first


class Recorder:
    def __init__(self, path: Path):
        self.path = path
        self.started = time.time()
        self.items: dict[str, tuple[str, str | None]] = {}
        self.results: dict[str, dict] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        self.items = {item.nodeid: describe(item) for item in items}

    def pytest_runtest_logreport(self, report):
        check, target = self.items.get(report.nodeid, (report.nodeid, None))
        entry = self.results.setdefault(
            report.nodeid, {"check": check, "target": target, "outcome": None, "reason": None, "seconds": 0.0}
        )
        entry["seconds"] = round(entry["seconds"] + report.duration, 3)
        if entry["outcome"] in ("fail", "skip"):
            return
        if report.skipped:
            entry["outcome"], entry["reason"] = "skip", reason_of(report)
        elif report.failed:
            entry["outcome"], entry["reason"] = "fail", reason_of(report)
        elif report.when == "call":
            entry["outcome"] = "pass"

    def pytest_sessionfinish(self, session, exitstatus):
        # pytest's placeholder for a check with no image of its kind here (a CUDA check in a CPU image's run)
        # is "not applicable", not a skip.
        results = [
            r for r in self.results.values() if r["outcome"] and not (r["reason"] or "").startswith(NOT_APPLICABLE)
        ]
        self.path.write_text(
            json.dumps(
                {
                    "seconds": round(time.time() - self.started, 2),
                    "exitstatus": int(exitstatus),
                    "environment": ENVIRONMENT,
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )
