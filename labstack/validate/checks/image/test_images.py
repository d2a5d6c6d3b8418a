"""What every labstack image promises, checked in a real container of the real image."""

from __future__ import annotations

import json

import pytest

from labstack import payload
from labstack.matrix import load_matrix
from labstack.validate.checks.image.conftest import run_python

MATRIX = load_matrix()
MANIFEST = payload.MANIFEST_IN_IMAGE


def test_labels_match_the_matrix(image, client):
    labels = client.images.get(image.ref).labels
    assert {k: labels.get(k) for k in image.labels()} == image.labels()
    assert labels["org.opencontainers.image.version"] == image.tag
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")


def test_runs_as_the_non_root_user(host):
    user = host.user()
    assert user.name == MATRIX.user
    assert (user.uid, user.gid) == (MATRIX.uid, MATRIX.gid)


def test_tini_is_pid_1(host):
    assert host.file("/proc/1/cmdline").content_string.split("\0")[0] == "/usr/bin/tini"


def test_python_is_the_matrix_version(host):
    assert run_python(host, "import platform; print(platform.python_version())").startswith(MATRIX.python_version + ".")


def test_framework_imports_at_the_matrix_version(host, image):
    version = run_python(host, f"import {image.import_name} as m; print(m.__version__)")
    assert version.split("+")[0] == image.version


def test_manifest_is_readable_without_python_and_matches_what_is_installed(host, image):
    versions = json.loads(host.file(f"{MANIFEST}/versions.json").content_string)
    assert (versions["framework"], versions["variant"]) == (image.framework, image.variant)
    assert versions["python"].startswith(MATRIX.python_version)
    recorded = set(host.file(f"{MANIFEST}/pip-freeze.txt").content_string.split())
    installed = set(
        run_python(
            host,
            "import importlib.metadata as m; "
            "print('\\n'.join(sorted(f\"{d.metadata['Name'].lower().replace('_', '-')}=={d.version}\" "
            "for d in m.distributions())))",
        ).split()
    )
    assert recorded == installed
    assert "tini=" in host.file(f"{MANIFEST}/dpkg.txt").content_string


def test_pip_check_is_clean(host):
    result = host.run("timeout 120 pip check")
    assert result.rc == 0, result.stdout + result.stderr


@pytest.mark.only("cpu")
def test_cpu_image_has_no_cuda_packages_and_no_nvidia_settings(host, image, client):
    names = [d["name"] for d in json.loads(host.check_output("pip list --format json"))]
    assert not [n for n in names if MATRIX.is_cuda_package(n)]
    env = client.images.get(image.ref).attrs["Config"]["Env"]
    assert not [e for e in env if e.startswith("NVIDIA_")]


@pytest.mark.only("cuda")
def test_cuda_image_is_a_cuda_build(host, image):
    if image.framework == "torch":
        assert run_python(host, "import torch; print(torch.version.cuda)") == image.cuda
    else:
        code = "import tensorflow as tf; print(tf.test.is_built_with_cuda())"
        assert run_python(host, code).splitlines()[-1] == "True"
    env = host.check_output("env")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env


@pytest.mark.only("cuda")
def test_cuda_image_degrades_cleanly_without_a_gpu(host, image):
    if image.framework == "torch":
        code = "import torch; print(torch.cuda.is_available(), torch.cuda.device_count())"
        assert run_python(host, code) == "False 0"
    else:
        code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
        assert run_python(host, code).splitlines()[-1] == "0"
