"""payload/bench.py's method, without a framework: what is timed, what is counted, what is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labstack import payload
from labstack.bench.run import parse_event

bench = payload.load("bench")


class Clocked:
    """A step and a sync that record the order of calls, so the test sees where the clock is read."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def step(self) -> None:
        self.calls.append("step")

    def sync(self) -> None:
        self.calls.append("sync")


def test_warmup_is_not_timed_and_every_timed_step_is_synchronised_on_both_sides():
    clocked = Clocked()
    timing = {"warmup": 3, "min_steps": 5, "min_seconds": 0.0, "max_seconds": 10.0}
    times = bench.timed_steps(clocked.step, clocked.sync, timing)
    assert len(times) == 5
    assert clocked.calls.count("step") == 3 + 5
    timed = clocked.calls[clocked.calls.index("sync") + 1 :]
    assert timed == ["sync", "step", "sync"] * 5


def test_timing_runs_until_the_minimum_time_as_well_as_the_minimum_count():
    clocked = Clocked()
    timing = {"warmup": 0, "min_steps": 2, "min_seconds": 0.05, "max_seconds": 10.0}
    times = bench.timed_steps(lambda: __import__("time").sleep(0.01), clocked.sync, timing)
    assert len(times) >= 4 and sum(times) >= 0.04


def test_median_and_spreads():
    stats = bench.median_spread([1.0, 2.0, 3.0, 4.0, 10.0])
    assert stats["median_s"] == 3.0
    assert stats["spread_range"] == pytest.approx(3.0)
    assert stats["min_s"] == 1.0 and stats["max_s"] == 10.0


def test_mixed_precision_only_on_gpu_and_matmul_in_both_precisions():
    expected = [("matmul", "fp32"), ("matmul", "bf16"), ("mnist_cnn", "fp32")]
    assert bench.cases(["matmul", "mnist_cnn"], "cpu") == expected
    assert ("resnet", "amp_bf16") in bench.cases(["resnet"], "cuda")
    assert ("matmul", "amp_bf16") not in bench.cases(["matmul"], "cuda")


def test_inputs_are_random_shaped_per_framework_layout():
    config = bench.CONFIGS["quick"]["resnet"]
    x, y = bench.synthetic_batch("resnet", config, normal=lambda shape: shape, integers=lambda high, n: (high, n),
                                 channels_last=True)  # fmt: skip
    assert x == (16, 112, 112, 3) and y == (1000, 16)
    x, _ = bench.synthetic_batch("mnist_cnn", {"batch": 128}, lambda s: s, lambda h, n: n, channels_last=False)
    assert x == (128, 1, 28, 28)


def test_quick_and_full_sizes_differ_so_references_are_matched_by_size():
    assert bench.CONFIGS["full"]["transformer"] == {
        "layers": 12,
        "hidden": 768,
        "heads": 12,
        "ffn": 3072,
        "seq": 128,
        "batch": 8,
    }  # fmt: skip  (BERT-base)
    assert bench.CONFIGS["quick"]["resnet"] != bench.CONFIGS["full"]["resnet"]


def test_an_unknown_workload_is_refused_with_exit_2():
    result = subprocess.run(
        [sys.executable, str(payload.path("bench")), "--framework", "torch", "--workloads", "mnist,matmul"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown workload mnist" in result.stderr and result.stdout == ""


def test_progress_events_are_told_apart_from_framework_output():
    assert parse_event('{"event": "done", "workload": "matmul"}') == {"event": "done", "workload": "matmul"}
    assert parse_event("2026-11-26 I tensorflow/core: oneDNN custom operations are on") is None
    assert parse_event('{"event": broken') is None


def test_other_processes_runnable_tasks_are_sampled():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with bench.OtherLoad(interval=0.05) as load:
            __import__("time").sleep(1.0)
    finally:
        hog.kill()
    assert len(load.samples) >= 10
    assert load.mean() >= 0.5  # the busy loop is runnable nearly all the time; this process is not counted


def test_steal_is_the_share_of_cpu_time_given_to_other_guests():
    before = [100, 0, 50, 800, 0, 0, 0, 50]
    after = [200, 0, 100, 1550, 0, 0, 0, 150]  # 100 of 1000 ticks stolen
    assert bench.steal_fraction(before, after) == pytest.approx(0.1)
    assert bench.steal_fraction([], after) is None
    assert len(bench.cpu_times()) == 8  # Linux: user nice system idle iowait irq softirq steal
