"""The plugin the shipped checks run under, through real pytest collections of the real checks (no Docker is
needed to collect): which checks each image gets, and what --gpu leaves out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labstack import ROOT
from labstack.validate.run import CHECKS_DIR

IMAGE_AND_GPU = [str(CHECKS_DIR / "image"), str(CHECKS_DIR / "gpu")]


def collected(*args: str, prelude: str = "") -> list[str]:
    """The node ids pytest collects (`--collect-only -q`), run as `invoke validate` runs it."""
    code = f"{prelude}import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode in (0, 5), result.stdout[-2000:] + result.stderr[-2000:]
    return [line for line in result.stdout.splitlines() if "::" in line and "[NOTSET]" not in line]


def checks(ids: list[str]) -> set[str]:
    return {node.split("::")[-1] for node in ids}


@pytest.mark.parametrize("image", ["torch-cpu", "tensorflow-cpu"])
def test_gpu_skip_keeps_every_check_of_a_cpu_image(image):
    """`invoke validate --gpu skip` once ran no image check at all: the GPU folder marked every item as gpu."""
    auto = collected(*IMAGE_AND_GPU, "--images", image, "--gpu", "auto")
    skip = collected(*IMAGE_AND_GPU, "--images", image, "--gpu", "skip")
    assert len(auto) >= 10 and checks(skip) == checks(auto)


@pytest.mark.parametrize("image", ["torch-cuda", "tensorflow-cuda"])
def test_gpu_skip_leaves_out_exactly_the_gpu_checks_of_a_cuda_image(image):
    auto = checks(collected(*IMAGE_AND_GPU, "--images", image, "--gpu", "auto"))
    skip = checks(collected(*IMAGE_AND_GPU, "--images", image, "--gpu", "skip"))
    gpu_checks = checks(collected(str(CHECKS_DIR / "gpu"), "--images", image, "--gpu", "auto"))
    assert gpu_checks and skip == auto - gpu_checks
    assert skip, "the image checks of a CUDA image still run"


def test_only_gives_a_check_the_images_it_asked_for():
    ids = collected(*IMAGE_AND_GPU, "--images", "all")
    shm_negative = [n for n in ids if "default_shm_breaks" in n]
    assert [n.rsplit("[", 1)[1] for n in shm_negative] == ["torch-cpu]"]
    gpu = [n for n in ids if "/gpu/" in n]
    assert gpu and all(n.endswith(("torch-cuda]", "tensorflow-cuda]")) for n in gpu)


def test_host_checks_collect_without_docker_rich_or_invoke():
    """A bare GPU host has pytest, testinfra and nvidia-ml-py, and none of the Docker SDK, rich or invoke."""
    blocked = "import sys\nfor m in ('docker', 'rich', 'invoke', 'matplotlib'): sys.modules[m] = None\n"
    ids = collected(str(CHECKS_DIR / "host"), "-p", "labstack.validate.plugin", prelude=blocked)
    assert any("test_nvidia_driver_is_present" in n for n in ids) and len(ids) >= 8
