"""The arithmetic of `invoke benchmark`, as pure functions of the typed records (labstack.bench.results): peaks,
statistics over repeated runs, container/bare-host ratios and changes against an earlier run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from labstack.bench.results import Run, setting_name

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


def cpu_peak(cpu: dict) -> CpuPeak | None:
    """Peak of the CPUs a run could use (the cpu probe's record): cores (the cgroup quota, and never more than the
    physical cores they sit on, so SMT siblings are not counted twice) x clock x FLOPs/cycle. None without a
    clock."""
    if not cpu.get("max_clock_mhz") or not cpu.get("usable_cpus"):
        return None
    cores = cpu["usable_cpus"]
    if cpu.get("physical_cores"):
        cores = min(cores, cpu["physical_cores"])
    path = cpu_isa_path(cpu.get("isa") or [], cpu.get("vendor_id"), cpu.get("cpu_family"))
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


def peak_gflops(run: Run, precision: str) -> float | None:
    if run.device == "cuda":
        return gpu_peak_gflops(run.device_name, precision)
    peak = cpu_peak(run.cpu)
    return peak.gflops(precision) if peak else None


# ------------------------------------------------------------------------------------------- statistics


def spread(values: list[float]) -> float | None:
    """(max - min) / median; None for fewer than two values."""
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


@dataclass(frozen=True)
class Row:
    """One (framework, where, device, workload, setting) of a benchmark: the median over repeated runs of each
    run's median throughput, the run-to-run spread of those medians, and for matmul the fraction of the peak."""

    framework: str
    framework_version: str | None
    where: str
    image: str | None
    device: str
    device_name: str | None
    workload: str
    precision: str
    config: dict
    unit: str
    throughput: float
    runs: int
    run_spread: float | None
    step_spread_iqr: float
    threads: int | None
    usable_cpus: int | None
    epoch_s: float | None = None
    tokens_per_s: float | None = None
    peak_gflops: float | None = None
    fraction_of_peak: float | None = None
    tuning: tuple[str, ...] = ()

    @property
    def setting(self) -> str:
        return setting_name(self.tuning)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.framework, self.where, self.device, self.workload, self.setting)

    @property
    def noise(self) -> float:
        """The measured noise: the run-to-run spread when repeated, else the steps' IQR / median."""
        return self.run_spread if self.run_spread is not None else self.step_spread_iqr or 0.0


def summarise(runs: list[Run] | tuple[Run, ...]) -> list[Row]:
    groups: dict[tuple, list[tuple[Run, object]]] = {}
    for run in runs:
        for result in run.results:
            key = (run.framework, run.where, run.device, result.workload, result.tuning)
            groups.setdefault(key, []).append((run, result))
    rows = []
    for (framework, where, device, workload, tuning), members in groups.items():
        run, first = members[0]
        precision = first.precision
        medians = [r.throughput for _, r in members]
        epochs = [r.epoch_s for _, r in members if r.epoch_s is not None]
        peak = peak_gflops(run, precision) if workload == "matmul" else None
        throughput = statistics.median(medians)
        rows.append(
            Row(
                framework=framework,
                framework_version=run.framework_version,
                where=where,
                image=run.image,
                device=device,
                device_name=run.device_name,
                workload=workload,
                precision=precision,
                config=first.config,
                unit=first.unit,
                throughput=throughput,
                runs=len(medians),
                run_spread=spread(medians),
                step_spread_iqr=statistics.median(r.spread_iqr for _, r in members),
                threads=run.threads.get("intra_op"),
                usable_cpus=run.usable_cpus,
                epoch_s=statistics.median(epochs) if epochs else None,
                tokens_per_s=throughput * first.config["seq"] if workload == "transformer" else None,
                peak_gflops=peak,
                fraction_of_peak=throughput / peak if peak else None,
                tuning=tuning,
            )
        )
    return rows


def container_ratios(rows: list[Row]) -> list[dict]:
    """In-container / bare-host throughput for each workload measured both ways in the same run."""
    local = {(r.framework, r.device, r.workload, r.setting): r for r in rows if r.where == "local"}
    ratios = []
    for row in rows:
        bare = local.get((row.framework, row.device, row.workload, row.setting))
        if row.where == "image" and bare:
            ratios.append(
                {
                    "framework": row.framework,
                    "device": row.device,
                    "workload": row.workload,
                    "precision": row.precision,
                    "setting": row.setting,
                    "image": row.throughput,
                    "local": bare.throughput,
                    "ratio": row.throughput / bare.throughput,
                    "noise": max(row.noise, bare.noise),
                }
            )
    return ratios


def compare(old_rows: list[Row], new_rows: list[Row]) -> list[dict]:
    """Each row measured in both: the change of throughput, flagged a regression (or improvement) only when it
    is larger than the noise measured in either run."""
    old = {r.key: r for r in old_rows}
    changes = []
    for row in new_rows:
        before = old.get(row.key)
        if not before or before.unit != row.unit or before.config != row.config:
            continue
        change = row.throughput / before.throughput - 1
        threshold = max(before.noise, row.noise)
        status = "regression" if change < -threshold else "improvement" if change > threshold else "within noise"
        changes.append({"framework": row.framework, "where": row.where, "device": row.device,
                        "workload": row.workload, "precision": row.precision, "setting": row.setting,
                        "unit": row.unit,
                        "old": before.throughput, "new": row.throughput, "change": change, "noise": threshold,
                        "status": status})  # fmt: skip
    return changes
