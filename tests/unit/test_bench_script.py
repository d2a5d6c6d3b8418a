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


AMX_CPU = {"isa": ["avx512_bf16", "avx512f", "amx_bf16"], "physical_cores": 2}
AVX2_CPU = {"isa": ["avx2", "fma"], "physical_cores": 2}


def test_the_cpu_is_tuned_the_way_a_careful_user_would_and_only_where_it_can_gain():
    plan = bench.plan_tuning
    assert plan("torch", "resnet", "cpu", AMX_CPU, 2, True) == (
        ["channels_last", "bf16_autocast"],
        ["threads: 2, already one per physical core"],
    )
    assert plan("torch", "transformer", "cpu", AMX_CPU, 2, True)[0] == ["bf16_autocast"]
    # no bf16 hardware: bf16 would be emulated, so it is not tried, and the report says why
    knobs, skipped = plan("torch", "mnist_cnn", "cpu", AVX2_CPU, 2, True)
    assert knobs == ["channels_last"] and any("neither AVX512_BF16 nor AMX" in s for s in skipped)
    # SMT siblings: four usable CPUs on two cores try one thread per core first
    assert plan("torch", "mnist_cnn", "cpu", AMX_CPU, 4, True)[0] == ["threads", "channels_last", "bf16_autocast"]
    assert bench.setting_of("mnist_cnn", ["threads"], 4, AMX_CPU)["threads"] == 2
    # Keras is channels-last already and TensorFlow cannot change its threads once started
    knobs, skipped = plan("tensorflow", "resnet", "cpu", AMX_CPU, 4, True)
    assert knobs == ["bf16_autocast"] and len(skipped) == 2
    # the GEMM in both precisions everywhere; a GPU without bf16 is not asked for it
    assert plan("torch", "matmul", "cpu", AVX2_CPU, 2, True)[0] == ["bf16"]
    assert plan("torch", "resnet", "cuda", {}, 2, False)[0] == ["channels_last"]
    assert bench.bf16_hardware(AMX_CPU) == "AMX" and bench.bf16_hardware(AVX2_CPU) is None


class Ladder:
    """A backend whose throughput per setting is given, to see which settings the tuning keeps."""

    def __init__(self, rates: dict[tuple, float], failing: tuple = ()) -> None:
        self.rates, self.failing = rates, failing

    def seed(self) -> None:
        pass

    def threads(self) -> dict:
        return {"intra_op": 2}

    def sync(self) -> None:
        pass

    def train_step(self, workload, config, setting):
        key = tuple(setting["tuning"])
        if key in self.failing:
            raise RuntimeError("unsupported here\nsecond line")
        rate = self.rates[key]
        return (lambda: __import__("time").sleep(config["batch"] / rate)), "cpu"


def test_each_setting_is_kept_only_when_faster_and_the_fastest_is_marked_best(monkeypatch):
    monkeypatch.setitem(bench.TIMING, "quick", {"warmup": 0, "min_steps": 3, "min_seconds": 0, "max_seconds": 9})
    # channels-last is slower here, so bf16 autocast is tried without it
    ladder = Ladder({(): 4000.0, ("channels_last",): 2000.0, ("bf16_autocast",): 8000.0})
    results, errors, started = [], [], []
    context = {"threads": 2, "cpu": AMX_CPU, "mode": "quick", "device": "cpu"}
    bench.tune(ladder, "mnist_cnn", ["channels_last", "bf16_autocast"], context,
               lambda w, s: started.append(s["tuning"]), results.append,
               lambda w, s, e: errors.append(e))  # fmt: skip
    assert started == [[], ["channels_last"], ["bf16_autocast"]]
    assert [r["tuning"] for r in results] == [[], ["channels_last"], ["bf16_autocast"]]
    assert [r["best"] for r in results] == [False, False, True]
    assert results[2]["precision"] == "amp_bf16" and not results[2]["channels_last"]
    # a setting that fails is an error of its own; the default stays the best
    results.clear()
    failing = Ladder({(): 4000.0}, failing=(("bf16_autocast",),))
    bench.tune(failing, "mnist_cnn", ["bf16_autocast"], context, lambda w, s: None, results.append,
               lambda w, s, e: errors.append((s["tuning"], str(e))))  # fmt: skip
    assert [r["best"] for r in results] == [True]
    assert errors == [(["bf16_autocast"], "unsupported here\nsecond line")]


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
