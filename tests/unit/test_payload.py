"""The payload has one home: what the images run (and the compose files name) is payload/, at one in-image path."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from labstack import ROOT, payload
from labstack.build.images import stage_context
from labstack.matrix import load_matrix

COMPOSE_FILES = [*sorted((ROOT / "compose").glob("*.yaml")), ROOT / "compose.yaml"]
IN_IMAGE_PATH = re.compile(r"/opt/labstack/[\w./-]+")


def test_every_in_image_path_in_the_compose_files_is_a_payload_program():
    named = {path for file in COMPOSE_FILES for path in IN_IMAGE_PATH.findall(file.read_text())}
    assert named, "the compose services run payload programs"
    for path in named:
        program = path.rsplit("/", 1)[1].removesuffix(".py")
        assert path == payload.in_image(program), f"{path} in a compose file is not where the images hold {program}"


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_the_images_copy_the_payload_to_its_in_image_path(framework):
    dockerfile = (ROOT / "images" / framework / "Dockerfile").read_text()
    assert f"COPY payload/ {payload.IN_IMAGE}/" in dockerfile
    assert f"python {payload.in_image('manifest')}" in dockerfile


def test_the_build_context_gets_the_payload_and_nothing_of_the_host(monkeypatch, tmp_path):
    monkeypatch.setenv("LABSTACK_CACHE", str(tmp_path))
    context = stage_context(load_matrix().image("torch", "cpu"), wheels={})
    staged = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    programs = {f"payload/{p.name}" for p in payload.PAYLOAD_DIR.glob("*.py")}
    assert programs and staged == programs | {"image/install.sh", "requirements.lock"}
    assert not list((ROOT / "scripts").glob("*.py")), "scripts/ holds the host's shell tools only"


def test_payload_programs_are_standard_library_plus_the_framework_and_each_other():
    allowed = set(sys.stdlib_module_names) | set(payload.programs())
    allowed |= {"torch", "tensorflow", "keras", "numpy", "pynvml"}
    for name in payload.programs():
        source = payload.source(name)
        imported = {m.split(".")[0] for m in re.findall(r"^\s*(?:from|import) ([\w.]+)", source, re.M)}
        assert imported <= allowed, (name, imported - allowed)


def test_loading_a_program_and_its_importer_gives_one_module():
    mnist = payload.load("mnist")
    train = payload.load("train")
    assert train.mnist is mnist and payload.load("mnist") is mnist


def test_a_name_that_is_no_payload_program_is_refused():
    with pytest.raises(ValueError):
        payload.in_image("install-docker")


def test_a_program_knows_the_payload_programs_it_imports_theirs_first():
    assert payload.siblings("probe") == ["threads"]
    assert payload.siblings("bench").index("threads") < payload.siblings("bench").index("probe")


def test_a_standalone_program_runs_where_none_of_the_payload_was_copied(tmp_path):
    """As the host checks run the probe over ssh: `python3 -c TEXT`, in a folder without its siblings."""
    result = subprocess.run(
        [sys.executable, "-I", "-c", payload.standalone("probe"), "cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["usable_cpus"] >= 1


@pytest.mark.parametrize(
    ("tagged", "installed", "problem"),
    [
        ("2.13.0", {"torch": "2.13.0+cpu"}, None),
        ("2.13.0", {"tensorflow-cpu": "2.13.0"}, None),
        ("2.99.0", {"torch": "2.13.0+cpu"}, "image tagged 2.99.0 holds torch 2.13.0+cpu"),
        ("2.13.0", {}, "no installed distribution provides torch"),
        ("", {"torch": "2.13.0+cpu"}, "no framework version to check"),
    ],
    ids=["local-label", "other-distribution-name", "other-release", "not-installed", "no-version-given"],
)
def test_the_image_build_checks_the_installed_framework_against_its_tag(tagged, installed, problem):
    problems = payload.load("manifest").version_problems("torch", tagged, installed)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_an_image_without_labstacks_labels_is_named_as_no_labstack_image_with_the_fix():
    from labstack.payload import IN_IMAGE, missing_payload  # here: the other tests of this file run without it

    problem = missing_payload("debian:bookworm", {"maintainer": "someone"})
    assert problem and problem.startswith(
        f"debian:bookworm is not a labstack image (no {IN_IMAGE}, no labstack.framework"
    )
    assert "invoke build" in problem
    assert missing_payload("debian:bookworm", None) == problem
    assert missing_payload("lab/own:1", {"labstack.framework": "torch", "labstack.layer": "lab"}) is None
