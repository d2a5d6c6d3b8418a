"""The body of `invoke benchmark` (tasks.py only declares it)."""

from __future__ import annotations

from labstack.bench.prices import prices_from
from labstack.bench.run import BenchOptions, parse_cpus, run_benchmark
from labstack.errors import whole_number


def benchmark(
    framework: str | None = None,
    variant: str = "auto",
    workloads: str | None = None,
    quick: bool = False,
    local: bool = False,
    repeat: str | int = 1,
    compare: str | None = None,
    out: str | None = None,
    cpus: str | None = None,
    model: str | None = None,
    project: str | None = None,
    project_setting: str = "",
    default_framework: str = "torch",
    gpu_hour_price: object = "",
    cpu_hour_price: object = "",
) -> None:
    """framework: all, or torch with --model; workloads: all, or none beside --model unless named."""
    repeats = whole_number("repeat", repeat)
    prices = prices_from(gpu_hour_price, cpu_hour_price)
    options = BenchOptions(framework, variant, workloads, quick, local, repeats, compare, out, parse_cpus(cpus),
                           model, project, project_setting, default_framework, prices)  # fmt: skip
    run_benchmark(options)
