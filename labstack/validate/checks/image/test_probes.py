"""The probes and small checks the validation suite relies on, run in real containers of the real images."""

from __future__ import annotations

import pytest

from labstack.gpu import shm_problem
from labstack.validate.checks.image.conftest import run_payload


def test_probes_report_the_framework_the_manifest_records(client, image):
    probes = run_payload(client, image, "probe", "system", image.framework, "nvml")
    manifest = probes["system"]["image_manifest"]
    framework = probes[image.framework]
    assert framework["available"], framework
    assert framework["version"] == manifest[image.framework]["version"]
    assert not framework["devices"], "no GPU is visible to a container started without --gpus"
    if image.variant == "cuda":
        assert framework["cuda_compiled"], framework
        assert probes["nvml"]["kind"] == "no-driver", probes["nvml"]
    else:
        assert probes["nvml"]["kind"] == "no-nvml-py", probes["nvml"]


def test_cpu_probe_follows_the_container_cpu_quota(client, image):
    cpu = run_payload(client, image, "probe", "cpu", nano_cpus=1_000_000_000)
    assert cpu["cgroup_cpu_limit"] == 1.0
    assert cpu["usable_cpus"] == 1


@pytest.mark.only(frameworks=("torch",))
def test_dataloader_workers_fit_in_the_shm_labstack_runs_with(client, image):
    shm = run_payload(client, image, "probe", "shm", shm_size="1g")
    assert shm_problem(shm) is None, shm_problem(shm)
    result = run_payload(client, image, "checks", "dataloader", shm_size="1g")
    assert result["ok"], result


@pytest.mark.only("cpu", frameworks=("torch",))
def test_docker_default_shm_breaks_dataloader_workers_and_is_diagnosed(client, image):
    """The negative: under Docker's default 64 MB the same loader fails, and the shm check says so."""
    problem = shm_problem(run_payload(client, image, "probe", "shm"))
    assert problem and "--shm-size" in problem
    result = run_payload(client, image, "checks", "dataloader", "--timeout", "10")
    assert not result["ok"], result
