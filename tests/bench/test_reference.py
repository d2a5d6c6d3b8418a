"""The GPU proof (python3 -m labstack.bench.reference) whole, on a CPU: in the torch CPU image, which has torch but
no pytest (as a bare GPU host has torch and pytest but maybe no testinfra), with the checkout mounted read-only.
Everything but the GPU itself runs: the probe, the host checks through pytest and testinfra, the benchmark, the
checks on its document, the files and the summary. Its pure parts: tests/unit/test_reference.py."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from labstack import ROOT
from labstack.matrix import load_matrix

# Pure-Python test tools the image lacks, copied from this venv with their metadata (testinfra's pytest plugin is
# an entry point), as `pip install --target` would lay them out; the image's Python is the same minor version.
TOOLS = ("pytest", "pluggy", "iniconfig", "pygments", "pytest-testinfra")


def copy_tools(site: Path) -> None:
    for name in TOOLS:
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            source = Path(distribution.locate_file(file))
            if "__pycache__" in file.parts or not source.is_file() or ".." in file.parts:
                continue
            (site / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, site / file)


def test_the_gpu_proof_runs_whole_on_a_cpu_in_the_torch_image(built, tmp_path):
    image = load_matrix().image("torch", "cpu")
    if image.name not in built:
        pytest.skip(f"{image.name} is not among the images of this run (--variant/--images)")
    site, out = tmp_path / "site", tmp_path / "out"
    site.mkdir()
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    copy_tools(site)
    command = [
        "docker", "run", "--rm", "--network", "none", "--volume", f"{ROOT}:/src:ro", "--volume", f"{out}:/out",
        "--volume", f"{site}:/site:ro", "--env", "PYTHONPATH=/site", "--env", "PYTHONDONTWRITEBYTECODE=1",
        "--workdir", "/src", image.ref,
        "python", "-m", "labstack.bench.reference", "--device", "cpu", "--sizes", "quick", "--out", "/out",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.split("GPU proof (cpu) in ")[1]
    assert [line.split()[0] for line in summary.splitlines()[1:4]] == ["ok", "ok", "ok"], done.stdout
    document = json.loads((out / "cpu-torch-quick.json").read_text())
    assert document["device"] == "cpu" and document["results"] and not document["errors"]
    assert document["framework"] == "torch" and document["environment"]
    # The host's GPU checks ran to their skip, each with the reason (no NVIDIA driver here), and none failed.
    suite = ET.parse(out / "cpu-host-checks.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) == int(suite.get("skipped")) > 0
    assert suite.get("failures") == suite.get("errors") == "0"
    assert all("NVIDIA" in skipped.get("message", "") for skipped in suite.iter("skipped"))
    assert not list(out.glob(".*.partial"))
