"""The report is made from the JSON alone: a recorded quick run on this 2-CPU machine, with and without a GPU
reference (the reference here is a test input for the wording, never a figure the report could show)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from labstack.bench.report import render_chart, render_markdown, write_report
from labstack.bench.results import read_document, read_run
from labstack.bench.verdict import NO_REFERENCE, analyse

RECORDED = Path(__file__).parent / "data" / "bench-quick-2cpu.json"


@pytest.fixture
def doc():
    return json.loads(RECORDED.read_text())


def analysis(doc, references=(), earlier=None):
    return analyse(read_document(doc), [read_run(r, reference_file=r.get("reference_file")) for r in references],
                   earlier)  # fmt: skip


def markdown(doc, references=()):
    return render_markdown(analysis(doc, references))


def gpu_reference(doc, mnist=30_000.0):
    """A GPU run of the recorded CPU run's mnist_cnn size, in bench.py's format."""
    cpu = next(r for r in doc["runs"][0]["results"] if r["workload"] == "mnist_cnn")
    results = [{**cpu, "throughput": mnist}, {**cpu, "precision": "amp_bf16", "throughput": 2 * mnist}]
    return {
        "framework": "torch",
        "where": "local",
        "device": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3",
        "started": "2026-11-20T12:00:00+00:00",
        "mode": "quick",
        "results": results,
        "environment": {"nvml": {"driver_version": "580.65.06"}},
        "reference_file": "h100-torch-quick.json",
    }


def test_without_a_reference_the_report_says_so_and_gives_no_gpu_figure(doc):
    text = markdown(doc)
    assert text.count(NO_REFERENCE) == 4  # one per workload
    assert "would make this" not in text and "H100" not in text
    assert "| torch 2.13.0+cpu | container | cpu | mnist_cnn | fp32 | batch 128 |" in text


def test_a_reference_gives_the_speedup_and_the_mnist_epochs(doc):
    found = analysis(doc, [gpu_reference(doc)])
    mnist = found.verdicts["mnist_cnn"]
    torch_cpu = next(r for r in found.rows if r.workload == "mnist_cnn" and r.framework == "torch")
    speedup = 60_000.0 / torch_cpu.throughput
    assert f"a GPU would make this x{speedup:.1f} faster" in mnist
    assert "reference NVIDIA H100 80GB HBM3" in mnist and "measured on 2026-11-20" in mnist
    assert "10 epochs of MNIST: 4 min here vs 10 s there" in mnist
    assert "(torch; no tensorflow reference yet)" in mnist  # the tensorflow row borrows torch's reference
    assert NO_REFERENCE not in mnist


def test_matmul_below_70_percent_says_why(doc):
    matmul = analysis(doc).verdicts["matmul"]
    assert "torch fp32 is below 70% of the peak" in matmul
    assert "limit is torch's GEMM library (mkl)" in matmul
    assert "cores run faster than the clock that was read" in matmul  # tensorflow beat the computed peak


def test_a_busy_machine_is_called_contended(doc):
    assert "contended" not in markdown(doc)
    busy = copy.deepcopy(doc)
    busy["runs"][0]["loadavg_start"] = [3.0, 2.0, 1.0]
    assert "figures are contended" in markdown(busy)


def test_interrupted_runs_are_marked(doc):
    doc["interrupted"] = True
    assert markdown(doc).count("**Interrupted**") == 1


def test_compare_section_flags_regressions(doc):
    earlier = copy.deepcopy(doc)
    resnet = next(r for r in earlier["runs"][0]["results"] if r["workload"] == "resnet")
    before = resnet["throughput"]
    resnet["throughput"] = before * 1.2
    doc["compare"] = {"file": "old.json"}
    text = render_markdown(analysis(doc, earlier=read_document(earlier)))
    assert "## Compared with old.json" in text
    assert f"| torch | image | resnet | fp32 | {before * 1.2:.3g} | {before:.3g} | -16.7% |" in text
    assert "**REGRESSION** |" in text


def test_chart_and_markdown_are_written(doc, tmp_path):
    page, chart = write_report(analysis(doc, [gpu_reference(doc)]), tmp_path)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert "![throughput per workload](benchmark.png)" in page.read_text()


def test_chart_without_reference(doc, tmp_path):
    path = render_chart(analysis(doc), tmp_path / "chart.png")
    assert path.stat().st_size > 10_000


def test_contention_is_judged_from_other_processes_not_from_the_runs_own_load(doc):
    for run in doc["runs"]:
        run["loadavg_start"] = [2.0, 2.0, 2.0]  # the previous run's own threads, still in the average
        run["other_load"] = 0.1
    assert "contended" not in markdown(doc)
    doc["runs"][1]["other_load"] = 1.0  # one other busy process on this 2-CPU machine
    assert "other processes kept on average up to 1.0 tasks runnable" in markdown(doc)


def test_this_machines_own_gpu_comes_before_a_committed_reference(doc):
    own = {**gpu_reference(doc, mnist=12_000.0), "started": "2026-11-01T00:00:00+00:00"}
    own.pop("reference_file")
    doc["runs"].append(own)
    mnist = analysis(doc, [gpu_reference(doc)]).verdicts["mnist_cnn"]
    assert "your GPU, NVIDIA H100 80GB HBM3: 12,000 samples/s" in mnist
    assert "reference NVIDIA" not in mnist
