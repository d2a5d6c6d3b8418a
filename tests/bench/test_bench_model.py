"""The lab's own model, timed for real in the torch CPU lab image: a tiny project written here, mounted read-only
at /work, its training steps tuned like the built-in workloads; and the failures of the lab's code, each one line.
No speed is asserted. `invoke benchmark --variant cpu` builds what it runs (the torch CPU image and its lab layer;
cached layers: seconds), so no fixture builds the other images first."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from labstack.matrix import load_matrix
from tests.invoking import assert_one_line_failure, run_invoke

TORCH_CPU = load_matrix().image("torch", "cpu")
SPEC = "mylab.model:build"
TINY_CNN = '''
import torch
from torch import nn


def build():
    """Two conv layers on 3x16x16 images, batch 8: seconds per setting, even on 2 CPUs."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    batch = (torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    return {"model": model, "batch": batch, "loss": nn.CrossEntropyLoss(), "samples_per_epoch": 50_000,
            "name": "tiny CNN"}


def flat_loss():
    parts = build()
    return parts["model"], parts["batch"], nn.CrossEntropyLoss(reduction="none")  # one per sample: not a scalar
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "lab" / "mylab").mkdir(parents=True)
    (tmp_path / "lab" / "mylab" / "__init__.py").write_text("")
    (tmp_path / "lab" / "mylab" / "model.py").write_text(textwrap.dedent(TINY_CNN))
    return tmp_path / "lab"


def leftover(client, project) -> list:
    """This test's bench containers still there (others may run beside it on the same daemon)."""
    return client.containers.list(all=True, filters={"label": "labstack.bench=1", "volume": str(project)})


def without_build_log(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """stderr less BuildKit's progress lines (`#N ...`), which a build of the cached images prints there too."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("#")]
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout, "\n".join(lines) + "\n")


def test_invoke_benchmark_times_the_labs_own_model_in_the_lab_image(project, tmp_path, client):
    out = tmp_path / "report"
    result = run_invoke("benchmark", "--model", SPEC, "--project", str(project), "--quick", "--variant", "cpu",
                        "--out", str(out), timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["workloads"] == ["model"] and doc["model"] == {"spec": SPEC, "project": str(project)}
    (run,) = doc["runs"]
    assert run["image"] == f"{TORCH_CPU.ref}-lab" and run["errors"] == []
    results = run["results"]
    assert {r["workload"] for r in results} == {"model"}  # the built-in workloads only when named
    assert results[0]["tuning"] == [] and results[0]["precision"] == "fp32"  # the default first
    assert [r["best"] for r in results].count(True) == 1
    assert any("channels_last" in r["tuning"] for r in results)  # its input is 4-D
    for r in results:
        assert r["config"] == {"spec": SPEC, "batch": 8, "samples_per_epoch": 50_000, "name": "tiny CNN"}
        assert r["unit"] == "samples/s" and r["throughput"] > 0 and "cpu" in r["device_used"]
        assert r["epoch_s"] == pytest.approx(50_000 / r["throughput"])
    markdown = (out / "benchmark.md").read_text()
    assert f"your model {SPEC}" in markdown and "one epoch of your data" in markdown
    assert leftover(client, project) == []


def test_a_model_that_does_not_import_is_one_line_naming_it(project):
    result = run_invoke("benchmark", "--model", "nosuch.model:build", "--project", str(project), "--quick",
                        "--variant", "cpu", timeout=600)  # fmt: skip
    assert_one_line_failure(
        without_build_log(result), 2, "torch-cpu-lab", "--model nosuch.model:build",
        "ModuleNotFoundError: No module named 'nosuch'",
    )  # fmt: skip


def test_a_training_step_that_fails_is_recorded_for_every_setting_and_ends_in_one_line(project, tmp_path, client):
    spec = "mylab.model:flat_loss"
    result = run_invoke("benchmark", "--model", spec, "--project", str(project), "--quick", "--variant", "cpu",
                        "--out", str(tmp_path / "report"), timeout=600)  # fmt: skip
    assert_one_line_failure(without_build_log(result), 1, f"--model {spec}: its training step failed in every "
                            "setting: TypeError: loss(output, targets) returned a tensor of shape (8,)")  # fmt: skip
    (run,) = json.loads((tmp_path / "report" / "benchmark.json").read_text())["runs"]
    assert run["results"] == [] and len(run["errors"]) >= 2  # the default and each setting tried
    assert {e["workload"] for e in run["errors"]} == {"model"}
    assert "Failed:" in (tmp_path / "report" / "benchmark.md").read_text()
    assert leftover(client, project) == []
