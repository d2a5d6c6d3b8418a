import dataclasses

import pytest
from packaging.utils import canonicalize_name

from labstack.build.lock import framework_distributions, parse_lock, read_lock
from labstack.errors import LabstackError
from labstack.matrix import MATRIX_PATH, load_matrix, parse_matrix

MATRIX = load_matrix()
IMAGES = MATRIX.select("all", "all")


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_lockfile_is_current_and_fully_hashed(image):
    pins = read_lock(image, MATRIX)
    assert pins and all(pin.hashes for pin in pins)


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_lockfile_pins_the_matrix_requirements(image):
    pins = {p.name: p.version for p in read_lock(image, MATRIX)}
    for requirement in image.requirements:
        name, _, version = requirement.replace("[and-cuda]", "").partition("=")
        assert pins[canonicalize_name(name)] == version.lstrip("=")


@pytest.mark.parametrize("framework", MATRIX.frameworks)
def test_cpu_and_cuda_locks_differ_only_in_cuda_packages_and_the_framework_wheel(framework):
    cpu, cuda = (MATRIX.image(framework, v) for v in ("cpu", "cuda"))
    own = framework_distributions([cpu, cuda])
    cpu_pins = {p.name: p for p in read_lock(cpu, MATRIX)}
    cuda_pins = {p.name: p for p in read_lock(cuda, MATRIX)}
    differing = {n for n in cpu_pins.keys() | cuda_pins.keys() if cpu_pins.get(n) != cuda_pins.get(n)}
    unexpected = {n for n in differing if n not in own and not MATRIX.is_cuda_package(n)}
    assert not unexpected, f"cpu and cuda locks of {framework} also differ in {sorted(unexpected)}"
    assert any(MATRIX.is_cuda_package(n) for n in cuda_pins), "the cuda lock holds no CUDA packages"
    assert not any(MATRIX.is_cuda_package(n) for n in cpu_pins), "the cpu lock holds CUDA packages"
    if framework == "torch":
        assert cpu_pins["torch"].version == cuda_pins["torch"].version + "+cpu"


def test_a_changed_matrix_makes_the_lock_stale():
    changed = parse_matrix(MATRIX_PATH.read_text().replace('"torch==2.13.0+cpu"', '"torch==2.12.0+cpu"'))
    with pytest.raises(LabstackError, match=r"stale.*invoke lock --framework torch"):
        read_lock(changed.image("torch", "cpu"), changed)


def test_a_missing_lockfile_says_how_to_make_it(tmp_path):
    image = dataclasses.replace(MATRIX.image("torch", "cpu"), framework="nothing-here")
    with pytest.raises(LabstackError, match=r"no lockfile.*invoke lock"):
        read_lock(image, MATRIX)


def test_parse_lock_joins_continuations_and_skips_comments():
    text = (
        "# labstack-inputs: abc\n"
        "foo==1.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via bar\n"
        "bar==2 \\\n    --hash=sha256:cc\n"
    )
    inputs, pins = parse_lock(text)
    assert inputs == "abc"
    assert [(p.name, p.version, sorted(p.hashes)) for p in pins] == [("foo", "1.0", ["aa", "bb"]), ("bar", "2", ["cc"])]


def test_an_unpinned_entry_is_rejected():
    with pytest.raises(LabstackError, match="not pinned"):
        parse_lock("foo>=1.0 --hash=sha256:aa\n")
