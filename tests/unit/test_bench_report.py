"""The report is made from the JSON alone: a recorded quick run on this 2-CPU machine, with and without a GPU
reference (the reference here is a test input for the wording, never a figure the report could show)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from labstack.bench.prices import money, prices_from
from labstack.bench.report import chart_panels, render_chart, render_markdown, write_report
from labstack.bench.results import read_document, read_run
from labstack.bench.verdict import NO_REFERENCE, TORCH_ONLY, Reference, analyse

RECORDED = Path(__file__).parent / "data" / "bench-quick-2cpu.json"


@pytest.fixture
def doc():
    return json.loads(RECORDED.read_text())


def analysis(doc, references=(), earlier=None, prices=None):
    return analyse(read_document(doc), [read_run(r, reference_file=r.get("reference_file")) for r in references],
                   earlier, prices)  # fmt: skip


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
    assert "H100" not in text and "GPU (" not in text
    assert "| torch 2.13.0+cpu | container | cpu | mnist_cnn | default | fp32 | batch 128 |" in text
    assert "no reference measured yet" in text  # the first screen's GPU column


def test_a_reference_gives_the_speedup_and_the_mnist_epochs(doc):
    found = analysis(doc, [gpu_reference(doc)])
    mnist = found.verdicts["mnist_cnn"]
    torch_cpu = next(r for r in found.rows if r.workload == "mnist_cnn" and r.framework == "torch")
    speedup = 60_000.0 / torch_cpu.throughput
    assert f"x{speedup:.1f} this CPU at its best" in mnist
    assert "GPU (NVIDIA H100 80GB HBM3, torch, reference h100-torch-quick.json, 2026-11-20)" in mnist
    assert "60,000 samples/s at its best with bf16 autocast (30,000 by default)" in mnist
    assert "10 epochs of MNIST: 4 min at its best" in mnist and "10 epochs of MNIST in 10 s" in mnist
    assert TORCH_ONLY in mnist  # the tensorflow row borrows torch's reference, and says so
    assert NO_REFERENCE not in mnist
    assert "Cost" not in mnist  # no prices, no costs


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
    assert f"| torch | image | resnet | default | {before * 1.2:.3g} | {before:.3g} | -16.7% |" in text
    assert "**REGRESSION** |" in text


def test_chart_and_markdown_are_written(doc, tmp_path):
    page, chart = write_report(analysis(doc, [gpu_reference(doc)]), tmp_path)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert "![time to train per workload, this CPU against the GPU](benchmark.png)" in page.read_text()


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
    assert "GPU (NVIDIA H100 80GB HBM3, torch, measured here, 2026-11-01): 24,000 samples/s" in mnist
    assert "reference h100" not in mnist


TUNED = Path(__file__).parent / "data" / "bench-quick-tuned-2cpu.json"


@pytest.fixture
def tuned():
    """A quick run of both CPU images with the CPU tuned: each workload's default, then each setting tried."""
    return json.loads(TUNED.read_text())


def test_default_and_best_stand_side_by_side_and_the_gain_is_named(tuned):
    found = analysis(tuned)
    resnet = next(a for a in found.answers if a.workload == "resnet" and a.framework == "torch")
    assert resnet.default.tuning == () and resnet.best.tuning == ("channels_last", "bf16_autocast")
    assert resnet.gain == pytest.approx(resnet.best.throughput / resnet.default.throughput)
    text = found.verdicts["resnet"]
    assert f"at its best with channels-last + bf16 autocast (x{resnet.gain:.2f})" in text
    assert "settings tried against the default: channels-last x" in text
    # a workload whose default was fastest keeps its default as the best, and says nothing else was faster
    mnist = next(a for a in found.answers if a.workload == "mnist_cnn" and a.framework == "torch")
    assert mnist.best is mnist.default and "not kept" in found.verdicts["mnist_cnn"]
    page = render_markdown(found)
    assert page.index("| workload | what you wait for | this CPU, default |") < page.index("## Verdicts")
    assert "| ResNet (torch) | an ImageNet-sized epoch, 1.28 M images | 8.3 h (43.1 images/s) |" in page
    assert "| resnet | channels_last + bf16_autocast | amp_bf16 |" in page


def test_the_gpu_is_compared_with_the_cpu_at_its_best_and_costs_come_only_from_the_labs_prices(tuned):
    mnist = next(r for r in tuned["runs"][0]["results"] if r["workload"] == "mnist_cnn" and not r["tuning"])
    gpu = {
        **gpu_reference(tuned),
        "results": [{**mnist, "throughput": 27_020.0}, {**mnist, "tuning": ["bf16_autocast"], "throughput": 54_040.0}],
    }
    found = analysis(tuned, [gpu], prices=prices_from("2.40 USD", "0.10 USD"))
    answer = next(a for a in found.answers if a.workload == "mnist_cnn" and a.framework == "torch")
    assert answer.speedup == pytest.approx(54_040.0 / answer.best.throughput)
    assert answer.reference.default.throughput == 27_020.0
    cpu_s, gpu_s = answer.cpu_wait[1], answer.gpu_wait[1]
    assert gpu_s == pytest.approx(600_000 / 54_040.0)
    cost = f"{money(0.10 * cpu_s / 3600, 'USD')} on this CPU, {money(2.40 * gpu_s / 3600, 'USD')} on the GPU"
    assert f"Cost of 10 epochs of MNIST: {cost}" in found.verdicts["mnist_cnn"]
    page = render_markdown(found)
    assert "0.10 USD an hour (labstack.cpu_hour_price)" in page and "No prices are configured" not in page
    assert "Cost" not in analysis(tuned, [gpu]).verdicts["mnist_cnn"]


@pytest.mark.parametrize(
    ("cpu_s", "speedup", "word"),
    [(300, None, "**No**"), (3600, None, "**A GPU helps**"), (9 * 3600, None, "**Yes**"), (9 * 3600, 1.1, "**No**")],
)
def test_the_answer_reads_the_wait_on_the_cpu_at_its_best(tuned, cpu_s, speedup, word):
    found = analysis(tuned)
    answer = next(a for a in found.answers if a.workload == "mnist_cnn" and a.framework == "torch")
    rate = 600_000 / cpu_s
    best = dataclasses.replace(answer.best, throughput=rate)
    reference = None
    if speedup:
        result = dataclasses.replace(read_run(gpu_reference(tuned)).results[0], throughput=rate * speedup)
        reference = Reference(read_run(gpu_reference(tuned)), result, result, True)
    short = dataclasses.replace(answer, best=best, reference=reference).short()
    assert short.startswith(word)


def test_the_chart_shows_time_to_train_for_the_cpu_by_default_at_its_best_and_the_gpu(tuned):
    resnet = [r for r in tuned["runs"][0]["results"] if r["workload"] == "resnet"]
    gpu = {**gpu_reference(tuned), "results": [{**r, "throughput": 50 * r["throughput"]} for r in resnet]}
    found = analysis(tuned, [gpu])
    panels = {heading: (label, bars) for heading, label, bars in chart_panels(found)}
    label, bars = panels["ResNet"]
    assert label == "time for an ImageNet-sized epoch, 1.28 M images"
    kinds = [b[3] for b in bars]
    assert kinds[:3] == ["default", "best", "gpu"]  # torch's, then TensorFlow's CPU bars
    answer = next(a for a in found.answers if a.workload == "resnet" and a.framework == "torch")
    assert bars[1][1] == pytest.approx(1_281_167 / answer.best.throughput)  # seconds, on a log axis
    assert bars[2][1] == pytest.approx(bars[1][1] / 50) and bars[2][2].endswith("x50 the CPU's best")
    gemm_label, gemm = panels["Large matrix multiply (GEMM)"]
    assert gemm_label == "GFLOP/s" and all(b[3] != "gpu" for b in gemm)  # no GEMM reference given


def test_the_labs_own_model_gets_its_own_answer_and_the_command_to_measure_it_on_a_gpu(tuned):
    config = {"spec": "mylab.model:build", "batch": 16, "samples_per_epoch": 50_000}
    run = {**tuned["runs"][0], "results": [{**r, "workload": "model", "config": config} for r in
                                           tuned["runs"][0]["results"] if r["workload"] == "mnist_cnn"]}  # fmt: skip
    found = analysis({**tuned, "runs": [run]})
    (answer,) = found.answers
    assert answer.cpu_wait[0] == "one epoch of your data, 50,000 samples"
    text = found.verdicts["model"]
    assert "--model mylab.model:build" in text and NO_REFERENCE not in text
    assert "### your model mylab.model:build" in render_markdown(found)
