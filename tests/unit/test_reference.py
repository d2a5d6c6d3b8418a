"""The GPU proof's pure parts: the file name from the GPU's model, what makes a benchmark document unfit as a
reference, the figures it prints, and its answers where a tool is missing. The whole of it on a CPU, in the torch
image: tests/bench/test_reference.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labstack import ROOT
from labstack.bench.reference import figures, find_testinfra, host_check_command, model_slug, problems_of


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("Tesla V100-PCIE-16GB", "v100"),
        ("Some Future Card", "some-future-card"),
        ("", "gpu"),
    ],
)
def test_a_reference_file_is_named_after_the_gpus_model(name, slug):
    assert model_slug(name) == slug


def good(**changes) -> dict:
    document = {"device": "cuda", "results": [{"workload": "matmul", "precision": "bf16", "tuning": ["bf16"],
                "best": True, "config": {}, "throughput": 798000.0, "unit": "GFLOP/s"}], "errors": [],
                "interrupted": False,
                "environment": {"nvml": {"available": True}}}  # fmt: skip
    return {**document, **changes}


def test_only_a_clean_gpu_run_is_fit_to_be_a_reference():
    assert problems_of(good(), "cuda") == []
    assert problems_of(good(device="cpu"), "cuda") == ["ran on cpu, not cuda"]
    assert problems_of(good(errors=[{"workload": "resnet", "error": "OOM"}]), "cuda") == ["resnet: OOM"]
    assert problems_of(good(interrupted=True, results=[]), "cuda") == ["interrupted", "no result"]
    assert problems_of(good(environment={"nvml": {"available": False}}), "cuda") == [
        "no NVML record of the GPU and driver"
    ]


def test_the_summary_prints_each_measured_figure():
    assert figures(good()) == ["  matmul bf16 (best) {}: 7.98e+05 GFLOP/s"]
    assert figures(good(results=[{"workload": "x", "throughput": None}])) == []


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python to stand for a bare host")
def test_a_host_without_testinfra_or_its_wheels_is_told_what_is_missing(tmp_path):
    """The system Python (no testinfra, as on the bare GPU host) and an empty wheels folder."""
    (tmp_path / "wheels").mkdir()
    found, how = find_testinfra(tmp_path / "wheels", tmp_path / "site", python="/usr/bin/python3")
    assert (found, how) == ("", "testinfra is not installed and no --wheels folder holds it (the host checks need it)")
    assert find_testinfra(None, tmp_path / "site") == ("", "testinfra: the host's")  # this venv has it


def test_bad_sizes_are_one_line_and_exit_2():
    done = subprocess.run([sys.executable, "-m", "labstack.bench.reference", "--sizes", "huge"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == "labstack: --sizes 'huge': full, quick or both"


def test_the_gpu_proof_runs_no_host_check_that_needs_docker(tmp_path):
    # The bare GPU host has no Docker: the first H100 proof failed on test_docker_can_start_gpu_containers alone.
    command = host_check_command("auto", tmp_path / "checks.xml")
    listed = subprocess.run([*command, "--collect-only"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    collected = [line for line in listed.stdout.splitlines() if "::" in line]
    assert any("test_gpu_matmul_on_the_host_matches_the_cpu" in line for line in collected), collected
    assert not [line for line in collected if "docker" in line.lower()], collected
