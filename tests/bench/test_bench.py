"""The benchmark in real containers of the real images (tiny sizes): what bench.py reports is what ran, and
`invoke benchmark` turns it into JSON, Markdown and a chart. No speed is asserted: figures go in the report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from labstack import ROOT, payload
from labstack.bench.run import Target, bench_arguments, run_in_container
from labstack.bench.verdict import NO_REFERENCE
from labstack.matrix import load_matrix

MATRIX = load_matrix()


def test_quick_workload_in_a_container_with_one_cpu(image, client):
    """With `--cpus 1` the framework runs one thread on the CPU, and says so itself."""
    events = []
    target = Target(image, "image", "cpu")  # the CUDA images too: on their CPU, which every host has
    doc = run_in_container(client, target, bench_arguments(target, ["mnist_cnn"], True), 1.0, 300, events.append)
    assert doc["errors"] == [] and not doc["interrupted"]
    assert doc["framework"] == image.framework and doc["framework_version"].startswith(image.version)
    assert doc["environment"]["cpu"]["usable_cpus"] == 1
    assert doc["threads"]["intra_op"] == 1
    result, *tuned = doc["results"]
    assert result["workload"] == "mnist_cnn" and result["precision"] == "fp32" and result["tuning"] == []
    assert "cpu" in result["device_used"].lower()
    assert result["steps"] >= 8 and len(result["times_s"]) == result["steps"]
    assert result["throughput"] > 0 and result["median_s"] > 0
    # then what a careful user would try on this CPU, each on its own line of the document
    expected = (["channels_last"] if image.framework == "torch" else []) + (
        ["bf16_autocast"] if doc["bf16_hardware"] else []
    )
    assert [knob for r in tuned for knob in r["tuning"] if knob not in ("threads",)][-1:] == expected[-1:]
    assert sum(r["best"] for r in doc["results"]) == 1
    assert [e["event"] for e in events][:3] == ["setup", "setup", "start"]
    assert [e["event"] for e in events].count("done") == len(doc["results"])


@pytest.mark.only("cuda")
def test_cuda_requested_where_the_framework_sees_no_gpu_exits_5(image, client):
    command = ["python", payload.in_image("bench"), *bench_arguments(Target(image, "image", "cuda"), ["matmul"], True)]
    container = client.containers.run(image.ref, command, detach=True, network_mode="none")  # no GPU requested
    try:
        code = container.wait(timeout=300)["StatusCode"]
        doc = json.loads(container.logs(stdout=True, stderr=False))
    finally:
        container.remove(force=True)
    assert code == 5
    assert doc["results"] == [] and re.search("cannot use CUDA|lists no GPU", doc["errors"][0]["error"])


def invoke_benchmark(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "invoke", "benchmark", "--quick", "--workloads", "mnist_cnn", "--out", str(tmp_path),
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ,
    )  # fmt: skip


RECORDED = ROOT / "tests" / "unit" / "data" / "bench-quick-2cpu.json"


@pytest.mark.usefixtures("built")
def test_invoke_benchmark_writes_json_markdown_and_chart(tmp_path):
    result = invoke_benchmark(tmp_path, "--compare", str(RECORDED))
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    # the lab's framework (torch) by default: the GPU references it is compared with are PyTorch's
    assert {run["image"] for run in doc["runs"]} == {i.ref for i in MATRIX.select("torch", "cpu")}
    settings = {row["setting"] for row in doc["summary"] if row["workload"] == "mnist_cnn"}
    assert "default" in settings and "channels_last" in settings  # the CPU's default and what was tried on it
    (run,) = doc["runs"]
    assert sum(r["best"] for r in run["results"]) == 1
    (answer,) = doc["answers"]  # default and best side by side in the JSON, as in the Markdown and the chart
    assert answer["cpu_default"] == run["results"][0]["throughput"]
    assert answer["cpu_best"] == max(r["throughput"] for r in run["results"])
    assert answer["yardstick"] == "10 epochs of MNIST" and answer["cpu_best_s"] > 0
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "10 epochs of MNIST" in markdown and "| this CPU, default | this CPU at its best |" in markdown
    assert "Do you need a GPU?" in result.stdout
    quick_references = sorted(p.name for p in (ROOT / "references").glob("*-torch-quick.json"))
    if quick_references:  # a quick run is compared with a quick reference, never the full one of the same config
        assert answer["gpu"] and answer["gpu"]["source"] in quick_references, answer
    else:
        assert NO_REFERENCE in markdown
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert "report: " in result.stdout
    changes = doc["compare"]["changes"]  # the recorded run measured the same size of mnist_cnn
    assert {(c["framework"], c["workload"], c["setting"]) for c in changes} == {("torch", "mnist_cnn", "default")}
    assert f"## Compared with {RECORDED}" in markdown


def test_asking_for_cuda_without_a_usable_gpu_is_one_line_with_exit_5(client):
    if not subprocess.run(["sh", "-c", "ls /dev/nvidia0"], capture_output=True).returncode:
        pytest.skip("this host has a GPU")
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "benchmark", "--variant", "cuda", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("labstack: ")


@pytest.mark.usefixtures("built")
def test_local_runs_the_same_wheels_on_the_host_and_gives_the_container_ratio(tmp_path):
    result = invoke_benchmark(tmp_path, "--framework", "torch", "--local")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    local = next(run for run in doc["runs"] if run["where"] == "local")
    assert local["environment"]["system"]["image_manifest"] is None  # no image around it
    assert next(r for r in doc["runs"] if r["where"] == "image")["environment"]["system"]["image_manifest"]
    assert local["framework_version"] == next(r for r in doc["runs"] if r["where"] == "image")["framework_version"]
    ratios = {r["setting"]: r for r in doc["container_ratios"]}  # one per setting measured both ways
    assert "default" in ratios and all(r["workload"] == "mnist_cnn" and r["ratio"] > 0 for r in ratios.values())
    assert "## Container overhead" in (tmp_path / "benchmark.md").read_text()


@pytest.mark.usefixtures("built")
def test_sigterm_keeps_what_was_measured_and_leaves_no_container(tmp_path, client):
    """timeout, systemd and Slurm stop a benchmark with SIGTERM: the partial report is written, its container
    is gone, and the exit code says it was SIGTERM (143), not Ctrl-C (130)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "benchmark", "--quick", "--framework", "torch", "--variant", "cpu",
         "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not client.containers.list(filters={"label": "labstack.bench=1"}) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(8)  # into the workloads
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr[-2000:]
    assert (
        stderr.strip().splitlines()[-1]
        == f"labstack: terminated (SIGTERM): the results measured so far are in {tmp_path}"
    )
    assert "**Interrupted**" in (tmp_path / "benchmark.md").read_text()
    assert json.loads((tmp_path / "benchmark.json").read_text())["interrupted"] is True
    assert client.containers.list(all=True, filters={"label": "labstack.bench=1"}) == []
