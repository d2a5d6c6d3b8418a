"""The layers on the framework images (lab, notebook): their locks, what they may change (nothing below them), what
they go without and how that is said, and `invoke lab-add`'s edit of the matrix. No Docker."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from labstack import ROOT, payload
from labstack.build.labadd import parse_new, with_packages
from labstack.build.layers import (
    LAB,
    LAYERS,
    NOTEBOOK,
    LayerLock,
    added_pins,
    check_requirements,
    inputs_digest,
    layer_ref,
    layers_up_to,
    lockfile,
    parent_pins,
    parse_missing,
    read_layer_lock,
    render_lock,
    resolve,
    unreachable_reason,
)
from labstack.build.lock import Pin, ResolveError, read_lock
from labstack.build.pipconf import PipSources
from labstack.errors import BadInput, LabstackError
from labstack.matrix import MATRIX_PATH, load_matrix, parse_matrix

MATRIX = load_matrix()
CELLS = [(image, layer) for image in MATRIX.images for layer in LAYERS.values()]


@pytest.mark.parametrize(("image", "layer"), CELLS, ids=[f"{i.name}-{layer.name}" for i, layer in CELLS])
def test_layer_locks_are_current_hashed_and_add_only(image, layer):
    lock = read_layer_lock(MATRIX, image, layer)
    below = {p.name for p in parent_pins(MATRIX, image, layer)}
    assert lock.pins and all(p.hashes for p in lock.pins)
    assert not below & {p.name for p in lock.pins}, "a layer lock repeats a pin of the image below it"


@pytest.mark.parametrize("image", MATRIX.images, ids=lambda i: i.name)
def test_lab_locks_hold_the_everyday_stack_at_the_matrix_versions(image):
    pins = {p.name: p.version for p in read_layer_lock(MATRIX, image, LAB).pins + read_lock(image, MATRIX)}
    for text in (*MATRIX.lab_requirements, *MATRIX.lab_packages):
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)], prereleases=True), text


@pytest.mark.parametrize("framework", MATRIX.frameworks)
@pytest.mark.parametrize("layer", LAYERS.values(), ids=lambda layer: layer.name)
def test_cpu_and_cuda_layer_locks_differ_only_in_cuda_packages_and_what_a_variant_goes_without(framework, layer):
    cpu, cuda = (MATRIX.image(framework, v) for v in ("cpu", "cuda"))
    locks = {image.variant: read_layer_lock(MATRIX, image, layer) for image in (cpu, cuda)}
    pins = {variant: {p.name: p.version for p in lock.pins} for variant, lock in locks.items()}
    differing = {n for n in pins["cpu"].keys() | pins["cuda"].keys() if pins["cpu"].get(n) != pins["cuda"].get(n)}
    per_variant = {canonicalize_name(Requirement(r).name) for i in (cpu, cuda) for r in i.lab_requirements}
    unexpected = {n for n in differing if not MATRIX.is_cuda_package(n) and n not in per_variant}
    assert not unexpected, f"the {layer.name} locks of {framework} also differ in {sorted(unexpected)}"
    for name in differing & per_variant:  # a per-variant package: in both locks, or named as missing in the other
        for variant in ("cpu", "cuda"):
            missing = {canonicalize_name(Requirement(r).name) for r in locks[variant].missing}
            assert name in pins[variant] or name in missing, f"{framework}-{variant} {layer.name}: {name} unexplained"


def test_torch_cpu_lab_lock_names_torchvision_as_missing_here_and_why():
    """PyPI's torchvision is the CUDA build; the +cpu one is on PyTorch's CPU index, which this host cannot reach.
    Where it can, the lock holds torchvision+cpu instead and this test tells you to update it."""
    lock = read_layer_lock(MATRIX, MATRIX.image("torch", "cpu"), LAB)
    if "torchvision" in {p.name for p in lock.pins}:
        assert next(p.version for p in lock.pins if p.name == "torchvision").endswith("+cpu")
        pytest.skip("this lock holds torchvision +cpu: PyTorch's CPU index was reachable when it was made")
    (requirement, why), *_ = lock.missing.items()
    assert requirement == "torchvision==0.28.0+cpu" and "download.pytorch.org/whl/cpu" in why
    cuda = read_layer_lock(MATRIX, MATRIX.image("torch", "cuda"), LAB)
    assert {p.name: p.version for p in cuda.pins}["torchvision"] == "0.28.0" and not cuda.missing


def test_a_layer_may_not_change_a_pin_below_it():
    below = [Pin("jinja2", "3.1.6", frozenset({"a"})), Pin("torch", "2.13.0", frozenset({"b"}))]
    wanted = [Pin("jinja2", "3.1.6", frozenset({"a"})), Pin("jupyterlab", "4.6.6", frozenset({"c"}))]
    assert [p.name for p in added_pins(NOTEBOOK, wanted, below)] == ["jupyterlab"]
    with pytest.raises(LabstackError, match=re.escape("jinja2 3.1.6 -> 3.1.7")):
        added_pins(NOTEBOOK, [Pin("jinja2", "3.1.7", frozenset({"d"}))], below)


def test_a_lab_package_that_would_change_a_framework_pin_is_refused_naming_it():
    image = MATRIX.image("tensorflow", "cpu")
    below = read_lock(image, MATRIX)
    protobuf = next(p.version for p in below if p.name == "protobuf")
    with pytest.raises(BadInput) as err:
        check_requirements(image, LAB, ("protobuf==3.20.0",), below)
    assert f"would change protobuf {protobuf}" in str(err.value) and "tensorflow-cpu" in str(err.value)
    check_requirements(image, LAB, (f"protobuf=={protobuf}", "seaborn"), below)
    with pytest.raises(BadInput, match="not a valid requirement"):
        check_requirements(image, LAB, ("numpy=>1",), below)


def test_resolve_refuses_before_uv_runs():
    """The refusal needs no network: sources that point nowhere are never used."""
    image = MATRIX.image("tensorflow", "cuda")
    changed = dataclasses.replace(MATRIX, lab_packages=("numpy==1.26.4",))
    nowhere = PipSources(index_url="http://127.0.0.1:9/simple", no_index=True)
    with pytest.raises(BadInput, match="numpy"):
        resolve(changed, image, LAB, nowhere, read_lock(image, MATRIX), [])


def test_layer_inputs_change_with_requirements_index_and_the_pins_below_not_comments():
    a, b = [Pin("numpy", "2.0.0", frozenset({"aa"}))], [Pin("numpy", "2.0.1", frozenset({"bb"}))]
    base = inputs_digest(("jupyterlab==1",), None, a)
    assert base != inputs_digest(("jupyterlab==1",), None, b)
    assert base != inputs_digest(("jupyterlab==2",), None, a)
    assert base != inputs_digest(("jupyterlab==1",), "https://example.org/simple", a)
    assert base == inputs_digest(("jupyterlab==1",), None, list(a))


def test_a_lab_package_added_to_the_matrix_makes_the_lab_and_notebook_locks_stale():
    changed = parse_matrix(MATRIX_PATH.read_text().replace("packages = []", 'packages = ["seaborn==0.13.2"]'))
    assert changed.lab_packages == ("seaborn==0.13.2",)
    image = changed.image("torch", "cpu")
    with pytest.raises(LabstackError, match=r"lab lockfile .* is stale.*invoke lock --layer lab --framework torch"):
        read_layer_lock(changed, image, LAB)
    with pytest.raises(LabstackError, match="stale"):
        read_layer_lock(changed, image, NOTEBOOK)


def test_missing_entries_round_trip_through_the_lockfile():
    lock = LayerLock([Pin("tqdm", "4.70.1", frozenset({"ab"}))], {"torchvision==0.28.0+cpu": "its index x is out"})
    text = render_lock("digest", lock)
    assert parse_missing(text) == lock.missing
    assert "tqdm==4.70.1 --hash=sha256:ab" in text


def test_the_missing_reason_is_the_same_whichever_package_uv_fetched_first():
    index = "https://download.pytorch.org/whl/cpu"
    reasons = {
        unreachable_reason(
            ResolveError(
                ["x"], f"error: Request failed\n  cause: Failed to fetch: {index}/{name}/\n  cause: dns error"
            ),
            index,
        )
        for name in ("numpy", "torchvision")
    }
    assert reasons == {f"its index {index} is out of reach from this host (dns error)"}


def test_layer_refs_and_order():
    image = MATRIX.image("torch", "cpu")
    assert layer_ref(image, "framework") == image.ref
    assert layer_ref(image, "lab") == image.ref + "-lab"
    assert [layer.name for layer in layers_up_to("notebook")] == ["lab", "notebook"]
    assert layers_up_to("framework") == []
    assert lockfile(image, LAB) == ROOT / "images" / "lab" / "requirements-torch-cpu.lock"


def test_lab_add_edits_only_the_lab_packages_line():
    text = MATRIX_PATH.read_text()
    edited = with_packages(text, ["seaborn==0.13.2", "tabulate==0.9.0"])
    assert tomllib.loads(edited)["lab"]["packages"] == ["seaborn==0.13.2", "tabulate==0.9.0"]
    assert edited.replace('packages = ["seaborn==0.13.2", "tabulate==0.9.0"]', "packages = []") == text


def test_lab_add_refuses_what_is_listed_already_or_is_not_a_requirement():
    with pytest.raises(BadInput, match=re.escape("already in the lab list as numpy==2.4.6")):
        parse_new("NumPy", MATRIX)
    with pytest.raises(BadInput, match="already in the lab list"):
        parse_new("torchvision", MATRIX)
    with pytest.raises(BadInput, match="not a package requirement"):
        parse_new("seaborn>>1", MATRIX)
    with pytest.raises(BadInput, match="without a URL"):
        parse_new("seaborn @ https://example.org/seaborn.whl", MATRIX)


def test_a_bad_requirement_is_refused_in_one_line():
    """packaging's own message spans three lines (the text and a caret under it): only its first is kept."""
    with pytest.raises(BadInput) as err:
        parse_new("seaborn>>1", MATRIX)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(BadInput) as err:
        check_requirements(MATRIX.image("torch", "cpu"), LAB, ("numpy=>1",), [])
    assert len(str(err.value).splitlines()) == 1


def test_invoke_lab_add_refuses_a_framework_pin_change_in_one_line_and_changes_nothing():
    before = {path: path.read_text() for path in [MATRIX_PATH, *(lockfile(i, LAB) for i in MATRIX.images)]}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "lab-add", "protobuf==3.20.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("labstack: ") and "protobuf" in lines[0]
    assert {path: path.read_text() for path in before} == before


layer_program = payload.load("layer")


@pytest.mark.parametrize(
    ("line", "name"),
    [("scikit-learn==1.9.1", "scikit-learn"), ("PyYAML>=6", "pyyaml"), ("torchvision===0.28.0", "torchvision"),
     ("tensorflow[and-cuda]==2.21.0", "tensorflow"), ("typing_extensions", "typing-extensions")],
)  # fmt: skip
def test_the_in_image_check_reads_the_distribution_a_requirement_names(line, name):
    assert layer_program.requirement_name(line) == name


def test_the_in_image_check_finds_a_distributions_modules_and_reports_what_does_not_import():
    assert "packaging" in layer_program.modules_of("packaging")
    imported, problems = layer_program.import_problems(["packaging", "no-such-distribution-here"])
    assert imported == {"packaging": layer_program.modules_of("packaging")}
    assert problems == ["no-such-distribution-here is not installed"]
