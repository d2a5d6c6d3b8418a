"""What a benchmark means, computed once: the summary rows, the container ratios, the GPU figure each CPU row is
compared with (this machine's own GPU run first, else a committed reference), whether the machine was busy,
and one verdict per workload. The Markdown, the chart and the terminal all read the same Analysis."""

from __future__ import annotations

from dataclasses import dataclass, replace

from labstack import payload
from labstack.bench.results import Document, Result, Run
from labstack.bench.stats import Row, compare, container_ratios, cpu_peak, summarise

REFERENCE_COMMAND = (
    "python3 payload/bench.py --device cuda --framework torch > references/<gpu>-torch-full.json "
    "(and again with --quick > references/<gpu>-torch-quick.json)"
)
NO_REFERENCE = (
    "No GPU reference has been measured yet for this workload and size, so no GPU figure is given: on a GPU host "
    f"(no Docker or network needed) run `{REFERENCE_COMMAND}` and commit the files (references/README.md)."
)
BUSY_FRACTION = 0.25  # other processes' runnable tasks, as a fraction of the CPUs, that make a run contended


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def where_label(row: Row) -> str:
    return "container" if row.where == "image" else "bare host"


@dataclass(frozen=True)
class Reference:
    """The GPU figures a CPU row is compared with: plain (fp32, or the matmul's own precision) and bf16 mixed."""

    run: Run
    plain: Result | None
    mixed: Result | None
    same_framework: bool

    @property
    def best(self) -> Result:
        return max((r for r in (self.plain, self.mixed) if r), key=lambda r: r.throughput)


def gpu_runs(runs: tuple[Run, ...], references: list[Run]) -> list[Run]:
    """This run's own GPU results, when it had a GPU, ahead of the committed references."""
    return [replace(run, own=True) for run in runs if run.device == "cuda" and run.results] + references


def find_reference(row: Row, candidates: list[Run]) -> Reference | None:
    """The newest GPU result of the same workload and size: the same framework if one exists, else the other
    framework's; this machine's own GPU before a committed reference."""
    matches = [
        (run.framework == row.framework, run.own, run.started, index, run)
        for index, run in enumerate(candidates)
        if any(r.workload == row.workload and r.config == row.config for r in run.results)
    ]
    if not matches:
        return None
    same_framework, *_, run = max(matches, key=lambda m: m[:4])
    chosen = [r for r in run.results if r.workload == row.workload and r.config == row.config]
    if row.workload == "matmul":
        plain, mixed = next((r for r in chosen if r.precision == row.precision), None), None
    else:
        plain = next((r for r in chosen if r.precision == "fp32"), None)
        mixed = next((r for r in chosen if r.precision == "amp_bf16"), None)
    if not plain and not mixed:
        return None
    return Reference(run, plain, mixed, same_framework)


def cpu_rows(rows: list[Row]) -> list[Row]:
    """The CPU figures a verdict quotes: in-container ones first (what the user runs), bare-host otherwise."""
    chosen: dict[tuple, Row] = {}
    for row in rows:
        if row.device != "cpu":
            continue
        key = (row.workload, row.precision, row.framework)
        if key not in chosen or row.where == "image":
            chosen[key] = row
    return list(chosen.values())


def wait_text(row: Row, throughput: float | None = None) -> str:
    """What a throughput means in the time a researcher waits (the workload table's yardstick)."""
    found = payload.load("workloads").wait_seconds(row.workload, row.config, throughput or row.throughput)
    if not found:
        return ""
    what, seconds = found
    rate = f"{fmt(row.tokens_per_s)} tokens/s, " if row.tokens_per_s else ""
    return f"{rate}{what}: {duration(seconds)}"


def reference_sentence(row: Row, reference: Reference) -> str:
    run = reference.run
    when = run.started[:10] or "an unknown date"
    device = run.device_name or "GPU"
    framework = "" if reference.same_framework else f" ({run.framework}; no {row.framework} reference yet)"
    parts = []
    for label, result in (("", reference.plain), (" with bf16 mixed precision", reference.mixed)):
        if result:
            parts.append(f"{fmt(result.throughput)} {row.unit}{label} (x{result.throughput / row.throughput:.1f})")
    source = f"your GPU, {device}" if run.own else f"reference {device}"
    text = (
        f"your CPU ({row.framework}, {where_label(row)}): {fmt(row.throughput)} {row.unit}; {source}"
        f"{framework}: {' and '.join(parts)}, measured on {when}"
    )
    best = reference.best.throughput
    text += f": a GPU would make this x{best / row.throughput:.1f} faster"
    wait = payload.load("workloads").wait_seconds(row.workload, row.config, row.throughput)
    there = payload.load("workloads").wait_seconds(row.workload, row.config, best)
    if wait and there:
        text += f"; {wait[0]}: {duration(wait[1])} here vs {duration(there[1])} there"
    return text + "."


def clock_note(rows: list[Row], cpu: dict) -> str | None:
    """When a GEMM beats the computed peak, the clock that was read is below the one the cores run at."""
    best = max((r.fraction_of_peak or 0 for r in rows if r.workload == "matmul" and r.device == "cpu"), default=0)
    peak = cpu_peak(cpu)
    if best <= 1.0 or not peak:
        return None
    return (
        f"The fastest GEMM reached {pct(best)} of the computed peak, so the cores run faster than the clock that "
        f"was read ({peak.clock_source}): at {best * peak.clock_mhz / 1000:.1f} GHz or more, and every fraction "
        "of peak here is overstated by that factor"
    )


def fp32_gemm_note(row: Row, rows: list[Row], cpu: dict, blas: str | None, busy: bool) -> str | None:
    """Why an fp32 GEMM is below 70% of the computed peak, from what the runs recorded."""
    fraction = row.fraction_of_peak
    if fraction is None or fraction >= 0.7 or row.precision != "fp32":
        return None
    notes = ["the machine was busy (see the warning above), so part of the gap may be contention"] if busy else []
    other = [
        r for r in rows
        if r.workload == "matmul" and r.precision == "fp32" and r.framework != row.framework
        and r.device == "cpu" and (r.fraction_of_peak or 0) > fraction * 1.3
    ]  # fmt: skip
    if other:
        notes.append(
            f"{other[0].framework} reached {pct(other[0].fraction_of_peak)} on the same CPU, so the limit is "
            f"{row.framework}'s GEMM library" + (f" ({blas})" if blas else "") + ", not the hardware"
        )
    if blas == "mkl" and cpu.get("vendor_id") == "AuthenticAMD":
        notes.append(
            "PyTorch's fp32 GEMM is Intel MKL, which picks its AVX-512 kernels for Intel CPUs and typically "
            "runs AVX2 kernels on AMD: at most half of this AVX-512 peak"
        )
    if not notes:
        notes.append("the BLAS library or a clock lower than the one read can each cause this")
    return f"{row.framework} fp32 is below 70% of the peak: " + "; ".join(notes)


def busy_warning(document: Document) -> str | None:
    """Contended when other processes kept runnable tasks on more than a quarter of the CPUs during a run
    (bench.py samples this; older records only have the load average, which also counts the run itself)."""
    cpus = document.host_cpus
    others = [run.other_load for run in document.runs if run.other_load is not None]
    if others and max(others) > BUSY_FRACTION * cpus:
        return (
            f"**The machine was busy**: other processes kept on average up to {max(others):.1f} tasks runnable "
            f"on its {cpus} CPUs during a run; these figures are contended: measure again on a quiet machine "
            "before relying on them."
        )
    loads = [max(run.loadavg_start or (0,)) for run in document.runs if run.other_load is None]
    if loads and max(loads) > 0.5 * cpus:
        return (
            f"**The machine was busy** (load average up to {max(loads):.1f} on {cpus} CPUs when runs started): "
            "these figures are contended; measure again on a quiet machine before relying on them."
        )
    return None


@dataclass(frozen=True)
class Analysis:
    document: Document
    rows: list[Row]
    ratios: list[dict]
    references: list[Run]  # the committed ones, for the report's list
    gpu: list[Run]  # what a CPU row can be compared with: this run's own GPU, then the references
    matches: dict[tuple, Reference]  # CPU row key -> its GPU figure
    busy: str | None
    verdicts: dict[str, str]
    changes: list[dict] | None = None


def verdicts(rows: list[Row], matches: dict[tuple, Reference], document: Document, busy: bool) -> dict[str, str]:
    """One paragraph per workload: this CPU's figures, what they mean in time, and the GPU figure."""
    cpu = next((run.cpu for run in document.runs if run.device == "cpu"), {})
    blas = {run.framework: run.framework_extra.get("blas") for run in document.runs}
    by_workload: dict[str, list[Row]] = {}
    for row in sorted(cpu_rows(rows), key=lambda r: (r.workload, r.framework, r.precision)):
        by_workload.setdefault(row.workload, []).append(row)
    out = {}
    for workload, members in by_workload.items():
        if workload == "matmul":
            figures = [
                f"{r.framework} {r.precision} {fmt(r.throughput)} GFLOP/s ({pct(r.fraction_of_peak)} of "
                f"{fmt(r.peak_gflops)})"
                for r in members
            ]
            sentences = ["This CPU, against its computed peak: " + ", ".join(figures)]
            sentences += [n for n in [clock_note(rows, cpu)] if n]
            sentences += [n for r in members if (n := fp32_gemm_note(r, rows, cpu, blas.get(r.framework), busy))]
        else:
            describe = payload.load("workloads").describe(workload, members[0].config)
            figures = [f"{r.framework} {fmt(r.throughput)} {r.unit} ({wait_text(r)})" for r in members]
            sentences = [f"This CPU ({describe}): " + "; ".join(figures)]
        found = [reference_sentence(r, matches[r.key]) for r in members if r.key in matches]
        sentences += found or [NO_REFERENCE]
        out[workload] = ". ".join(s.rstrip(".") for s in sentences) + "."
    return out


def analyse(document: Document, references: list[Run], earlier: Document | None = None) -> Analysis:
    rows = summarise(document.runs)
    gpu = gpu_runs(document.runs, references)
    matches = {row.key: ref for row in cpu_rows(rows) if (ref := find_reference(row, gpu))}
    busy = busy_warning(document)
    return Analysis(
        document=document,
        rows=rows,
        ratios=container_ratios(rows),
        references=references,
        gpu=gpu,
        matches=matches,
        busy=busy,
        verdicts=verdicts(rows, matches, document, busy is not None),
        changes=compare(summarise(earlier.runs), rows) if earlier else None,
    )
