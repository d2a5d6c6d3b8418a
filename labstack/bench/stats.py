"""The arithmetic of `invoke benchmark`, as pure functions of the recorded JSON: peaks, statistics over
repeated runs, container/bare-host ratios, GPU references and regressions."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from labstack import ROOT
from labstack.errors import BadInput

REFERENCES_DIR = ROOT / "references"
RUN_SCHEMA = "labstack-bench-run/1"
REPORT_SCHEMA = "labstack-benchmark/1"
AMD = "AuthenticAMD"
ZEN4_FAMILY = 0x19  # Zen 3 has no AVX-512, so family 0x19 with avx512f is Zen 4
ZEN5_FAMILY = 0x1A


@dataclass(frozen=True)
class IsaPath:
    name: str
    fp32: int  # FLOPs per cycle per core
    bf16: int
    why: str


def cpu_isa_path(isa: list[str], vendor: str | None, family: int | None) -> IsaPath:
    """FLOPs per cycle per core of the widest matrix path the CPU flags show (an FMA counts as 2 FLOPs)."""
    flags = set(isa)
    if "amx_bf16" in flags:
        why = "AMX tiles: 1024 bf16 FLOPs/cycle (Intel's figure); fp32 on two AVX-512 FMA units"
        return IsaPath("AMX + AVX-512", 64, 1024, why)
    if "avx512f" in flags:
        bf16 = "avx512_bf16" in flags
        if vendor == AMD and family == ZEN4_FAMILY:
            return IsaPath(
                "AVX-512 (Zen 4: 512-bit ops on two 256-bit FMA pipes)", 32, 64 if bf16 else 32,
                "Zen 4 executes a 512-bit FMA as two halves on its two 256-bit pipes: 2 x 8 lanes x 2 = 32 fp32 "
                "FLOPs/cycle, the AVX2 rate; VDPBF16PS does twice that in bf16",
            )  # fmt: skip
        if vendor == AMD:
            return IsaPath(
                "AVX-512 (Zen 5: two 512-bit FMA pipes)", 64, 128 if bf16 else 64,
                "Zen 5 server and desktop cores have two full 512-bit FMA pipes: 2 x 16 lanes x 2 = 64 fp32 "
                "FLOPs/cycle; VDPBF16PS doubles it (Zen 5 laptop parts split 512-bit ops and reach half)",
            )  # fmt: skip
        return IsaPath(
            "AVX-512 (two FMA units)", 64, 128 if bf16 else 64,
            "two 512-bit FMA units: 2 x 16 lanes x 2 = 64 fp32 FLOPs/cycle (Xeons with one FMA unit reach half)",
        )  # fmt: skip
    if {"avx2", "fma"} <= flags:
        why = "two 256-bit FMA units: 2 x 8 lanes x 2 = 32 fp32 FLOPs/cycle; bf16 is converted and runs at that rate"
        return IsaPath("AVX2 + FMA", 32, 32, why)
    if "avx" in flags:
        return IsaPath("AVX", 16, 16, "one 256-bit add and one multiply per cycle")
    return IsaPath("SSE", 8, 8, "128-bit add and multiply")


@dataclass(frozen=True)
class CpuPeak:
    cores: int
    clock_mhz: float
    clock_source: str
    path: IsaPath

    def gflops(self, precision: str) -> float:
        per_cycle = self.path.bf16 if precision == "bf16" else self.path.fp32
        return self.cores * self.clock_mhz / 1000 * per_cycle

    def describe(self) -> str:
        return (
            f"{self.cores} cores x {self.clock_mhz / 1000:.2f} GHz ({self.clock_source}) x {self.path.fp32} fp32 / "
            f"{self.path.bf16} bf16 FLOPs/cycle ({self.path.name}) = {self.gflops('fp32'):.0f} / "
            f"{self.gflops('bf16'):.0f} GFLOP/s"
        )


def cpu_details(environment: dict) -> dict:
    """Vendor, family and physical cores: in the cpu probe's record; runs recorded before the probe had them
    carry them in a separate `cpu_details` record."""
    return environment.get("cpu_details") or environment.get("cpu") or {}


def cpu_peak(environment: dict) -> CpuPeak | None:
    """Peak of the CPUs this run could use: cores (the cgroup quota, and never more than the physical cores
    they sit on, so SMT siblings are not counted twice) x clock x FLOPs/cycle. None without a clock."""
    cpu = environment.get("cpu") or {}
    details = cpu_details(environment)
    if not cpu.get("max_clock_mhz") or not cpu.get("usable_cpus"):
        return None
    cores = cpu["usable_cpus"]
    if details.get("physical_cores"):
        cores = min(cores, details["physical_cores"])
    path = cpu_isa_path(cpu.get("isa") or [], details.get("vendor_id"), details.get("cpu_family"))
    return CpuPeak(cores, float(cpu["max_clock_mhz"]), cpu.get("clock_source", "unknown"), path)


# Dense (no sparsity) peaks from NVIDIA's data sheets, TFLOP/s: (NVML name fragment, fp32, bf16). The first
# fragment found in the NVML name wins, so specific names come before general ones. fp32 is without TF32:
# PyTorch's default for matmul; bf16 None where the GPU has no bf16 tensor cores.
GPU_PEAKS = (
    ("H100 PCIe", 51.2, 756.0),
    ("H100 NVL", 60.0, 835.0),
    ("H100", 66.9, 989.4),
    ("H200", 66.9, 989.4),
    ("GH200", 66.9, 989.4),
    ("A100", 19.5, 312.0),
    ("L40S", 91.6, 362.1),
    ("L4", 30.3, 121.0),
    ("A10", 31.2, 125.0),
    ("RTX 4090", 82.6, 165.2),
    ("T4", 8.1, None),
    ("V100", 15.7, None),
)


def gpu_peak_gflops(name: str | None, precision: str) -> float | None:
    if not name:
        return None
    for fragment, fp32, bf16 in GPU_PEAKS:
        if fragment in name:
            value = bf16 if precision == "bf16" else fp32
            return value * 1000 if value else None
    return None


def peak_gflops(run: dict, precision: str) -> float | None:
    if run.get("device") == "cuda":
        return gpu_peak_gflops(run.get("device_name"), precision)
    peak = cpu_peak(run.get("environment") or {})
    return peak.gflops(precision) if peak else None


# ------------------------------------------------------------------------------------------- statistics


def spread(values: list[float]) -> float | None:
    """(max - min) / median; None for fewer than two values."""
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def result_key(run: dict, result: dict) -> tuple[str, str, str, str, str]:
    return (run["framework"], run.get("where", "local"), run["device"], result["workload"], result["precision"])


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (framework, where, device, workload, precision): the median over repeated runs of each run's
    median throughput, the run-to-run spread of those medians, and the achieved fraction of the peak."""
    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for run in runs:
        for result in run.get("results", []):
            groups.setdefault(result_key(run, result), []).append((run, result))
    rows = []
    for key, members in groups.items():
        framework, where, device, workload, precision = key
        run, first = members[0]
        medians = [r["throughput"] for _, r in members]
        row = {
            "framework": framework,
            "framework_version": run.get("framework_version"),
            "where": where,
            "image": run.get("image"),
            "device": device,
            "device_name": run.get("device_name"),
            "workload": workload,
            "precision": precision,
            "config": first.get("config", {}),
            "unit": first["unit"],
            "throughput": statistics.median(medians),
            "runs": len(medians),
            "run_spread": spread(medians),
            "step_spread_iqr": statistics.median(r["spread_iqr"] for _, r in members),
            "threads": (run.get("threads") or {}).get("intra_op"),
            "usable_cpus": ((run.get("environment") or {}).get("cpu") or {}).get("usable_cpus"),
        }
        if workload == "transformer":
            row["tokens_per_s"] = row["throughput"] * row["config"]["seq"]
        if workload == "mnist_cnn":
            row["epoch_s"] = statistics.median(r["epoch_s"] for _, r in members)
        if workload == "matmul":
            peak = peak_gflops(run, precision)
            row["peak_gflops"] = peak
            row["fraction_of_peak"] = row["throughput"] / peak if peak else None
        rows.append(row)
    return rows


def noise(row: dict) -> float:
    """The measured noise of a row: the run-to-run spread when repeated, else the steps' IQR / median."""
    return row["run_spread"] if row.get("run_spread") is not None else row.get("step_spread_iqr") or 0.0


def container_ratios(rows: list[dict]) -> list[dict]:
    """In-container / bare-host throughput for each workload measured both ways in the same run."""
    local = {(r["framework"], r["device"], r["workload"], r["precision"]): r for r in rows if r["where"] == "local"}
    ratios = []
    for row in rows:
        bare = local.get((row["framework"], row["device"], row["workload"], row["precision"]))
        if row["where"] == "image" and bare:
            ratios.append(
                {
                    "framework": row["framework"],
                    "device": row["device"],
                    "workload": row["workload"],
                    "precision": row["precision"],
                    "image": row["throughput"],
                    "local": bare["throughput"],
                    "ratio": row["throughput"] / bare["throughput"],
                    "noise": max(noise(row), noise(bare)),
                }
            )
    return ratios


def row_id(row: dict) -> tuple:
    return (row["framework"], row["where"], row["device"], row["workload"], row["precision"])


def compare(old_rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """Each row measured in both: the change of throughput, flagged a regression (or improvement) only when it
    is larger than the noise measured in either run."""
    old = {row_id(r): r for r in old_rows}
    changes = []
    for row in new_rows:
        before = old.get(row_id(row))
        if not before or before["unit"] != row["unit"] or before.get("config") != row.get("config"):
            continue
        change = row["throughput"] / before["throughput"] - 1
        threshold = max(noise(before), noise(row))
        status = "regression" if change < -threshold else "improvement" if change > threshold else "within noise"
        changes.append({**{k: row[k] for k in ("framework", "where", "device", "workload", "precision", "unit")},
                        "old": before["throughput"], "new": row["throughput"], "change": change,
                        "noise": threshold, "status": status})  # fmt: skip
    return changes


# -------------------------------------------------------------------------------------------- references


def load_run_documents(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{what} {path} is not a labstack benchmark JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("schema") not in (RUN_SCHEMA, REPORT_SCHEMA):
        raise BadInput(f"{what} {path} is not a labstack benchmark JSON (no known 'schema')")
    return doc


def load_references(directory: Path = REFERENCES_DIR) -> list[dict]:
    """The committed GPU reference runs (bench.py documents measured with --device cuda), each with its file."""
    references = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        doc = load_run_documents(path, "reference")
        for run in doc.get("runs", [doc]):
            if run.get("device") == "cuda" and run.get("results"):
                references.append({**run, "where": run.get("where", "local"), "reference_file": path.name})
    return references


def with_own_gpu(runs: list[dict], references: list[dict]) -> list[dict]:
    """This run's own GPU results, when it had a GPU, ahead of the committed references."""
    own = [{**run, "own": True} for run in runs if run.get("device") == "cuda" and run.get("results")]
    return own + references


def find_reference(row: dict, references: list[dict]) -> dict | None:
    """The newest reference result of the same workload and config: the same framework if one exists, else
    the other framework's; this machine's own GPU (a run marked 'own') before a committed reference.
    Returns {'run', 'fp32', 'amp', 'same_framework'} (the results for plain and mixed precision)."""
    matches = []
    for run in references:
        for result in run["results"]:
            if result["workload"] == row["workload"] and result.get("config", {}) == row.get("config", {}):
                matches.append((run["framework"] == row["framework"], run.get("started", ""), run, result))
    if not matches:
        return None
    same_framework, _, run, _ = max(matches, key=lambda m: (m[0], bool(m[2].get("own")), m[1]))
    chosen = [m[3] for m in matches if m[2] is run]
    if row["workload"] == "matmul":
        plain = next((r for r in chosen if r["precision"] == row["precision"]), None)
        mixed = None
    else:
        plain = next((r for r in chosen if r["precision"] == "fp32"), None)
        mixed = next((r for r in chosen if r["precision"] == "amp_bf16"), None)
    if not plain and not mixed:
        return None
    return {"run": run, "fp32": plain, "amp": mixed, "same_framework": same_framework}
