"""The tasks as a user types them: bad input gives one line and a non-zero exit, never a traceback."""

import os
import subprocess
import sys

import pytest

from labstack import ROOT
from labstack.lock import read_lock
from labstack.matrix import load_matrix

INVOKE = [sys.executable, "-m", "invoke"]


def run_invoke(*args, env=None):
    return subprocess.run(
        [*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def assert_one_line_failure(result, code, *words):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0]


def test_invoke_list_shows_every_task_with_a_description():
    listing = run_invoke("--list").stdout
    for name in ("build", "lock", "base", "wheels", "validate", "test"):
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split()) > 1


@pytest.mark.parametrize(("args", "word"), [(["--framework", "jax"], "framework"), (["--variant", "rocm"], "variant")])
def test_unknown_framework_or_variant(args, word):
    assert_one_line_failure(run_invoke("build", *args), 2, f"unknown {word}", "choose from")


def test_no_docker_daemon():
    result = run_invoke("build", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_failure(result, 3, "cannot reach the Docker daemon", "install-docker.sh")


def test_tampered_wheelhouse_is_refused_before_any_download(tmp_path):
    matrix = load_matrix()
    image = matrix.image("torch", "cpu")
    pin = next(p for p in read_lock(image, matrix) if p.name == "filelock")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"filelock-{pin.version}-py3-none-any.whl").write_bytes(b"not the wheel you locked")
    result = run_invoke("wheels", "--framework", "torch", "--variant", "cpu", env={"LABSTACK_CACHE": str(tmp_path)})
    assert_one_line_failure(result, 1, "does not match the hash", "filelock")


def test_pinned_base_is_required_for_pulled_images():
    result = run_invoke("base", "--from-image", "debian:bookworm-slim")
    assert_one_line_failure(result, 2, "not pinned", "@sha256")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--gpu", "maybe"], ["unknown --gpu", "auto, require, skip"]),
        (["--hosts", "gpu1", "--image", "none"], ["bad host", "ssh://"]),
        (["--image", "jax-cpu"], ["unknown image", "torch-cpu"]),
        (["--image", "none", "--hosts", "none"], ["nothing to validate"]),
    ],
)
def test_validate_bad_input(args, words):
    assert_one_line_failure(run_invoke("validate", *args), 2, *words)
