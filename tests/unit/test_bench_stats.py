"""Peaks, statistics over repeats, container ratios, regressions and references: pure functions of the records the
one reader makes of the JSON (and the older shapes it absorbs)."""

from __future__ import annotations

import json

import pytest

from labstack.bench.results import load_document, load_references, read_document, read_run
from labstack.bench.stats import compare, container_ratios, cpu_isa_path, cpu_peak, gpu_peak_gflops, spread, summarise
from labstack.bench.verdict import find_reference
from labstack.errors import LabstackError

AVX512 = ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16"]


@pytest.mark.parametrize(
    ("isa", "vendor", "family", "fp32", "bf16"),
    [
        (AVX512, "AuthenticAMD", 0x19, 32, 64),  # Zen 4: 512-bit ops on two 256-bit pipes
        (AVX512, "AuthenticAMD", 0x1A, 64, 128),  # Zen 5: two 512-bit pipes
        (AVX512, "GenuineIntel", 6, 64, 128),
        ([*AVX512, "amx_tile", "amx_bf16"], "GenuineIntel", 6, 64, 1024),
        (["avx", "avx2", "fma", "avx512f"], "GenuineIntel", 6, 64, 64),  # no bf16 units: bf16 runs at fp32 rate
        (["avx", "avx2", "fma"], "AuthenticAMD", 0x17, 32, 32),
        (["avx"], None, None, 16, 16),
        ([], None, None, 8, 8),
    ],
)
def test_flops_per_cycle_follow_the_isa_and_the_core(isa, vendor, family, fp32, bf16):
    path = cpu_isa_path(isa, vendor, family)
    assert (path.fp32, path.bf16) == (fp32, bf16)


def environment(usable=2, physical=2, clock=2600.0, family=0x1A):
    """A run's environment as bench.py records it: the cpu probe's record (vendor, family, physical cores)."""
    return {
        "cpu": {
            "usable_cpus": usable, "max_clock_mhz": clock, "clock_source": "cpufreq", "isa": AVX512,
            "vendor_id": "AuthenticAMD", "cpu_family": family, "physical_cores": physical,
        },
    }  # fmt: skip


def test_cpu_peak_is_cores_times_clock_times_flops_per_cycle():
    peak = cpu_peak(environment()["cpu"])
    assert peak.gflops("fp32") == pytest.approx(2 * 2.6 * 64)
    assert peak.gflops("bf16") == pytest.approx(2 * 2.6 * 128)
    assert "cpufreq" in peak.describe()


def test_cpu_peak_counts_the_quota_and_smt_siblings_once():
    assert cpu_peak(environment(usable=1, physical=2)["cpu"]).cores == 1  # docker run --cpus 1
    assert cpu_peak(environment(usable=2, physical=1)["cpu"]).cores == 1  # two hyperthreads of one core


def test_runs_recorded_with_a_separate_cpu_details_record_still_give_their_peak():
    old = environment(family=0x19, physical=1)
    cpu = old["cpu"]
    old["cpu_details"] = {k: cpu.pop(k) for k in ("vendor_id", "cpu_family", "physical_cores")}
    recorded = read_run({"framework": "torch", "device": "cpu", "environment": old})
    peak = cpu_peak(recorded.cpu)
    assert peak.cores == 1 and peak.gflops("fp32") == pytest.approx(1 * 2.6 * 32)


def test_cpu_peak_is_unknown_without_a_clock():
    assert cpu_peak(environment(clock=None)["cpu"]) is None


@pytest.mark.parametrize(
    ("name", "precision", "gflops"),
    [
        ("NVIDIA H100 80GB HBM3", "fp32", 66_900),
        ("NVIDIA H100 80GB HBM3", "bf16", 989_400),
        ("NVIDIA H100 PCIe", "fp32", 51_200),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312_000),
        ("Tesla T4", "bf16", None),
        ("NVIDIA Imaginary 9000", "fp32", None),
        (None, "fp32", None),
    ],
)
def test_gpu_peak_comes_from_the_table_or_is_unknown(name, precision, gflops):
    found = gpu_peak_gflops(name, precision)
    assert found == (pytest.approx(gflops) if gflops else None)


def run(framework="torch", where="image", device="cpu", throughputs=None, spread_iqr=0.01, config=None, **extra):
    return read_run(run_json(framework, where, device, throughputs, spread_iqr, config, **extra))


def run_json(framework="torch", where="image", device="cpu", throughputs=None, spread_iqr=0.01, config=None, **extra):
    """A run as bench.py writes it."""
    throughputs = throughputs or {("mnist_cnn", "fp32"): 1000.0}
    results = [
        {
            "workload": w,
            "precision": p,
            "config": config if config is not None else ({} if w == "matmul" else {"batch": 128}),
            "unit": "GFLOP/s" if w == "matmul" else "samples/s",
            "throughput": value,
            "spread_iqr": spread_iqr,
            "epoch_s": 60_000 / value,
        }
        for (w, p), value in throughputs.items()
    ]
    return {"framework": framework, "where": where, "device": device, "results": results,
            "environment": environment(), **extra}  # fmt: skip


def test_spread_is_range_over_median():
    assert spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)
    assert spread([10.0]) is None


def test_summary_takes_the_median_of_repeated_runs_and_their_spread():
    runs = [run(throughputs={("mnist_cnn", "fp32"): v}) for v in (100.0, 104.0, 98.0)]
    (row,) = summarise(runs)
    assert row.throughput == 100.0
    assert row.runs == 3
    assert row.run_spread == pytest.approx(0.06)
    assert row.epoch_s == pytest.approx(600.0)


def test_summary_gives_matmul_its_fraction_of_peak():
    (row,) = summarise([run(throughputs={("matmul", "fp32"): 166.4})])
    assert row.peak_gflops == pytest.approx(332.8)
    assert row.fraction_of_peak == pytest.approx(0.5)


def test_container_ratio_pairs_the_same_workload_in_and_out_of_the_container():
    rows = summarise([run(throughputs={("mnist_cnn", "fp32"): 990.0}), run(where="local")])
    (ratio,) = container_ratios(rows)
    assert ratio["ratio"] == pytest.approx(0.99)
    assert ratio["workload"] == "mnist_cnn"


def test_compare_flags_only_changes_beyond_the_measured_noise():
    old = summarise([run(throughputs={("mnist_cnn", "fp32"): 1000.0, ("matmul", "fp32"): 200.0,
                                      ("matmul", "bf16"): 800.0}, spread_iqr=0.02)])  # fmt: skip
    new = summarise([run(throughputs={("mnist_cnn", "fp32"): 900.0, ("matmul", "fp32"): 197.0,
                                      ("matmul", "bf16"): 900.0}, spread_iqr=0.02)])  # fmt: skip
    status = {c["workload"] + c["precision"]: c["status"] for c in compare(old, new)}
    assert status == {"mnist_cnnfp32": "regression", "matmulfp32": "within noise", "matmulbf16": "improvement"}


def test_compare_skips_results_of_another_size():
    old = summarise([run(config={"batch": 64})])
    assert compare(old, summarise([run()])) == []


def reference_json(framework="torch", started="2026-11-01T10:00:00+00:00", value=20_000.0, amp=40_000.0):
    return run_json(framework=framework, where="local", device="cuda", device_name="NVIDIA H100 80GB HBM3",
                    throughputs={("mnist_cnn", "fp32"): value, ("mnist_cnn", "amp_bf16"): amp},
                    started=started)  # fmt: skip


def reference_run(*args, **kwargs):
    return read_run(reference_json(*args, **kwargs), reference_file="h100.json")


def test_reference_prefers_the_same_framework_then_the_newest():
    row = summarise([run(framework="tensorflow")])[0]
    references = [reference_run("torch", "2026-11-03"), reference_run("tensorflow", "2026-11-01"),
                  reference_run("tensorflow", "2026-11-02", value=25_000.0)]  # fmt: skip
    found = find_reference(row, references)
    assert found.same_framework and found.run.started == "2026-11-02"
    assert found.default.throughput == 25_000.0 and found.best.throughput == 40_000.0
    assert found.best.tuning == ("bf16_autocast",)  # a file written before tuning: its precision was its setting


def test_reference_prefers_the_same_mode_where_both_sizes_share_a_config():
    # matmul and the MNIST CNN have one size in full and quick: a full CPU run is compared with the GPU's full
    # run, even when the quick reference file was written after it (found on the first H100 references).
    row = summarise([run()])[0]
    full = read_run({**reference_json(started="2026-11-27T13:12"), "mode": "full"}, reference_file="h100-full.json")
    quick = read_run({**reference_json(started="2026-11-27T13:14", value=9.0), "mode": "quick"},
                     reference_file="h100-quick.json")  # fmt: skip
    assert find_reference(row, [full, quick], mode="full").run.reference_file == "h100-full.json"
    assert find_reference(row, [full, quick], mode="quick").run.reference_file == "h100-quick.json"


def test_reference_of_another_size_is_not_used():
    row = summarise([run(config={"batch": 64})])[0]
    assert find_reference(row, [reference_run()]) is None


def test_references_load_only_gpu_runs(tmp_path):
    (tmp_path / "h100.json").write_text(json.dumps({**reference_json(), "schema": "labstack-bench-run/1"}))
    (tmp_path / "cpu.json").write_text(json.dumps({**run_json(), "schema": "labstack-bench-run/1"}))
    loaded = load_references(tmp_path)
    assert [r.reference_file for r in loaded] == ["h100.json"]


def test_the_committed_references_load():
    for reference in load_references():
        assert reference.device == "cuda" and reference.environment["nvml"]["available"]


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"schema": "something-else"})])
def test_a_missing_or_foreign_file_is_bad_input(tmp_path, content):
    path = tmp_path / "old.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LabstackError) as err:
        load_document(path, "--compare file")
    assert err.value.code == 2 and str(path) in str(err.value)


def test_a_single_bench_run_reads_as_a_document_of_one_bare_host_run():
    data = {**run_json(), "schema": "labstack-bench-run/1", "started": "2026-11-02T00:00:00+00:00"}
    del data["where"]
    document = read_document(data)
    (only,) = document.runs
    assert only.where == "local" and document.created == "2026-11-02T00:00:00+00:00"


def test_results_recorded_without_their_time_scale_get_it_from_the_throughput():
    data = run_json(throughputs={("mnist_cnn", "fp32"): 2000.0, ("transformer", "fp32"): 4.0},
                    config={"seq": 128, "batch": 8})  # fmt: skip
    for result in data["results"]:
        result.pop("epoch_s")
    results = {r.workload: r for r in read_run(data).results}
    assert results["mnist_cnn"].epoch_s == pytest.approx(30.0)
    assert results["transformer"].tokens_per_s == pytest.approx(512.0)


def test_a_document_whose_runs_lack_a_field_is_bad_input():
    with pytest.raises(LabstackError) as err:
        read_document({"schema": "labstack-benchmark/1", "runs": [{"framework": "torch"}]}, "--compare file x")
    assert err.value.code == 2 and "lacks 'device'" in str(err.value)
