"""The body of `invoke benchmark` (tasks.py only declares it)."""

from __future__ import annotations

from labstack.bench.prices import prices_from
from labstack.bench.run import BenchOptions, parse_cpus, run_benchmark
from labstack.errors import whole_number


def benchmark(
    framework: str = "torch",
    variant: str = "auto",
    workloads: str = "all",
    quick: bool = False,
    local: bool = False,
    repeat: str | int = 1,
    compare: str | None = None,
    out: str | None = None,
    cpus: str | None = None,
    gpu_hour_price: object = "",
    cpu_hour_price: object = "",
) -> None:
    repeats = whole_number("repeat", repeat)
    prices = prices_from(gpu_hour_price, cpu_hour_price)
    run_benchmark(
        BenchOptions(framework, variant, workloads, quick, local, repeats, compare, out, parse_cpus(cpus), prices)
    )
