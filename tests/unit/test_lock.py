import dataclasses

import pytest
from packaging.utils import canonicalize_name

from labstack.build.lock import check_framework_version, framework_distributions, parse_lock, read_lock
from labstack.errors import LabstackError
from labstack.matrix import MATRIX_PATH, load_matrix, parse_matrix
from tests.invoking import assert_one_line_failure, checkout_copy, invoke_in_copy

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


def torch_cpu_pins():
    image = MATRIX.image("torch", "cpu")
    return image, read_lock(image, MATRIX)


def test_the_framework_pin_may_carry_the_variants_local_label():
    image, pins = torch_cpu_pins()
    assert {p.name: p.version for p in pins}["torch"] == f"{image.version}+cpu"
    check_framework_version(image, pins)


def test_a_framework_pinned_at_another_release_than_the_matrix_version_is_refused():
    image, pins = torch_cpu_pins()
    pinned = {p.name: p.version for p in pins}["torch"]
    relabelled = dataclasses.replace(image, version="2.99.0")
    with pytest.raises(LabstackError) as err:
        check_framework_version(relabelled, pins)
    message = str(err.value)
    assert err.value.code == 1 and "\n" not in message
    for words in (
        "images/matrix.toml [frameworks.torch] version is 2.99.0",
        f"images/torch/requirements-cpu.lock pins torch {pinned}",
        f"put the version back to {image.version}",
        "invoke lock --framework torch",
    ):
        assert words in message, message


def test_a_lockfile_without_the_framework_is_refused():
    image, pins = torch_cpu_pins()
    with pytest.raises(LabstackError, match=r"requirements-cpu.lock pins no torch.*invoke lock --framework torch"):
        check_framework_version(image, [p for p in pins if p.name != "torch"])


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_a_matrix_version_changed_without_its_requirements_is_refused_with_the_lock(image):
    """The lock's inputs are the requirements: a version changed alone leaves the lock current, not right."""
    old = f'version = "{image.version}"'
    text = MATRIX_PATH.read_text()
    assert text.count(old) == 1
    changed = parse_matrix(text.replace(old, 'version = "9.9.9"'))
    with pytest.raises(LabstackError, match=rf"\[frameworks\.{image.framework}\] version is 9\.9\.9, but .* pins "):
        read_lock(changed.image(image.framework, image.variant), changed)


@pytest.mark.parametrize(
    ("junk", "words"),
    [
        (b"!!! not a requirement\n", ["line 3 is not a requirement ('!!! not a requirement')"]),
        (b"\xff\xfe\x00junk\n", ["line 3 is not text"]),
    ],
    ids=["garbage", "binary"],
)
def test_a_damaged_lockfile_line_is_one_line_naming_the_file_and_the_line(tmp_path, monkeypatch, junk, words):
    copy = checkout_copy(tmp_path / "checkout")
    lock = copy / "images" / "torch" / "requirements-cpu.lock"
    lines = lock.read_bytes().splitlines(keepends=True)
    lock.write_bytes(b"".join(lines[:2]) + junk + b"".join(lines[2:]))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = invoke_in_copy(copy, "labstack-test", "build", "--framework", "torch")
    assert_one_line_failure(result, 2, "images/torch/requirements-cpu.lock", *words, "git checkout --", "invoke lock")
