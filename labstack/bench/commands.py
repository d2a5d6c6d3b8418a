"""The body of `invoke benchmark` (tasks.py only declares it)."""

from __future__ import annotations

from labstack.bench.run import BenchOptions, parse_cpus, run_benchmark


def benchmark(
    framework: str = "all",
    variant: str = "auto",
    workloads: str = "all",
    quick: bool = False,
    local: bool = False,
    repeat: int = 1,
    compare: str | None = None,
    out: str | None = None,
    cpus: str | None = None,
) -> None:
    run_benchmark(
        BenchOptions(framework, variant, workloads, quick, local, int(repeat), compare, out, parse_cpus(cpus))
    )
