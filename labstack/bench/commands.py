"""The body of `invoke benchmark` (tasks.py only declares it)."""

from __future__ import annotations

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
) -> None:
    """framework: all, or torch with --model; workloads: all, or none beside --model unless named."""
    repeats = whole_number("repeat", repeat)
    run_benchmark(BenchOptions(framework, variant, workloads, quick, local, repeats, compare, out, parse_cpus(cpus),
                               model, project, project_setting))  # fmt: skip
