"""What a benchmark means, computed once: the summary rows, the container ratios, the GPU figure each CPU row is
compared with (this machine's own GPU run first, else a committed reference), whether the machine was busy,
and one verdict per workload. The Markdown, the chart and the terminal all read the same Analysis."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from labstack import payload
from labstack.bench.prices import Prices
from labstack.bench.results import Document, Result, Run
from labstack.bench.stats import Row, compare, container_ratios, cpu_peak, summarise

REFERENCE_COMMAND = "python3 -m labstack.bench.reference"
NO_REFERENCE = (
    "No GPU reference has been measured yet for this workload and size, so no GPU figure is given: on a GPU host "
    f"(no Docker or network needed) run `{REFERENCE_COMMAND}` and commit the files (references/README.md)."
)
TORCH_ONLY = (
    "the GPU figure is PyTorch's: the GPU host where references are measured has no TensorFlow and no network to "
    "fetch it, so there is no TensorFlow GPU reference"
)


def model_no_reference(config: dict) -> str:
    spec = config.get("spec", "package.module:function")
    return (
        "No GPU figure for your model: this host has no usable GPU and no reference of it is committed. On a GPU host "
        f"(no Docker needed), from your project folder: `PYTHONPATH=. python3 LABSTACK/payload/bench.py --device cuda "
        f"--framework torch --model {spec} > LABSTACK/references/<gpu>-model.json`, then run this again."
    )


BUSY_FRACTION = 0.25  # other processes' runnable tasks, as a fraction of the CPUs, that make a run contended
# The answer's yardstick, on the CPU at its best: the wait for a coffee, and a working day.
ENOUGH_S = 10 * 60
WORKING_DAY_S = 8 * 3600
KNOB_TEXT = {
    "threads": "one thread per physical core",
    "channels_last": "channels-last",
    "bf16_autocast": "bf16 autocast",
    "bf16": "bf16",
}


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
    """The GPU figures a CPU row is compared with: the GPU's default setting and its fastest."""

    run: Run
    default: Result | None
    best: Result
    same_framework: bool

    @property
    def source(self) -> str:
        run = self.run
        device = run.device_name or "GPU"
        when = run.started[:10] or "an unknown date"
        where = "measured here" if run.own else f"reference {run.reference_file or ''}".strip()
        return f"{device}, {run.framework} {run.framework_version or ''}".strip() + f", {where}, {when}"


def gpu_runs(runs: tuple[Run, ...], references: list[Run]) -> list[Run]:
    """This run's own GPU results, when it had a GPU, ahead of the committed references."""
    return [replace(run, own=True) for run in runs if run.device == "cuda" and run.results] + references


def find_reference(row: Row, candidates: list[Run], mode: str | None = None) -> Reference | None:
    """The newest GPU run with the same workload and size: the same framework if one exists, else the other
    framework's; of the same mode (full, quick) where a workload's size is the same in both (matmul, the MNIST
    CNN); this machine's own GPU before a committed reference. Its default and its fastest setting."""
    matches = [
        (run.framework == row.framework, run.mode == mode, run.own, run.started, index, run)
        for index, run in enumerate(candidates)
        if any(r.workload == row.workload and r.config == row.config for r in run.results)
    ]
    if not matches:
        return None
    same_framework, *_, run = max(matches, key=lambda m: m[:5])
    chosen = [r for r in run.results if r.workload == row.workload and r.config == row.config]
    default = next((r for r in chosen if not r.tuning), None)
    return Reference(run, default, max(chosen, key=lambda r: r.throughput), same_framework)


def cpu_rows(rows: list[Row]) -> list[Row]:
    """The CPU figures a verdict quotes: in-container ones first (what the user runs), bare-host otherwise."""
    chosen: dict[tuple, Row] = {}
    for row in rows:
        if row.device != "cpu":
            continue
        key = (row.workload, row.setting, row.framework)
        if key not in chosen or row.where == "image":
            chosen[key] = row
    return list(chosen.values())


def title(workload: str, config: dict) -> str:
    return payload.load("workloads").title(workload, config)


def yardstick(workload: str, config: dict, throughput: float | None) -> tuple[str, float] | None:
    """(what, seconds): how long the workload's yardstick takes at `throughput`; None where it has none (the
    GEMM; a model of the lab's that did not say how many samples an epoch of its data has)."""
    if not throughput:
        return None
    return payload.load("workloads").wait_seconds(workload, config, throughput)


def knobs_text(tuning: tuple[str, ...]) -> str:
    return " + ".join(KNOB_TEXT.get(k, k) for k in tuning) or "the default"


@dataclass(frozen=True)
class Answer:
    """Do you need a GPU for this workload (in this framework)? This CPU by default and at its best, the GPU
    figure it is compared with, and what the workload's yardstick takes (and costs) on each."""

    workload: str
    framework: str
    default: Row | None  # this CPU with the default setting
    best: Row  # this CPU's fastest setting
    tried: tuple[Row, ...]  # every setting measured, default first
    reference: Reference | None
    prices: Prices

    @property
    def gain(self) -> float | None:
        return self.best.throughput / self.default.throughput if self.default else None

    @property
    def speedup(self) -> float | None:
        return self.reference.best.throughput / self.best.throughput if self.reference else None

    def wait(self, throughput: float | None) -> tuple[str, float] | None:
        return yardstick(self.workload, self.best.config, throughput)

    @property
    def cpu_wait(self) -> tuple[str, float] | None:
        return self.wait(self.best.throughput)

    @property
    def gpu_wait(self) -> tuple[str, float] | None:
        return self.wait(self.reference.best.throughput) if self.reference else None

    def costs(self) -> str | None:
        """What the yardstick costs on each, from the lab's prices; None without a price or a yardstick."""
        cpu, gpu = self.cpu_wait, self.gpu_wait
        parts = []
        if cpu and self.prices.cpu:
            parts.append(f"{self.prices.cpu.text(cpu[1])} on this CPU")
        if gpu and self.prices.gpu:
            parts.append(f"{self.prices.gpu.text(gpu[1])} on the GPU")
        return ", ".join(parts) or None

    def record(self) -> dict:
        """The answer in benchmark.json: default and best side by side, the GPU figure and its source, the times."""
        cpu, gpu, reference = self.cpu_wait, self.gpu_wait, self.reference
        default_wait = self.wait(self.default.throughput) if self.default else None
        return {
            "workload": self.workload,
            "framework": self.framework,
            "where": self.best.where,
            "unit": self.best.unit,
            "cpu_default": self.default.throughput if self.default else None,
            "cpu_best": self.best.throughput,
            "cpu_best_setting": self.best.setting,
            "cpu_gain": self.gain,
            "tried": {row.setting: row.throughput for row in self.tried},
            "yardstick": cpu[0] if cpu else None,
            "cpu_default_s": default_wait[1] if default_wait else None,
            "cpu_best_s": cpu[1] if cpu else None,
            "gpu": None
            if not reference
            else {
                "device": reference.run.device_name,
                "framework": reference.run.framework,
                "measured": reference.run.started,
                "source": "this machine" if reference.run.own else reference.run.reference_file,
                "default": reference.default.throughput if reference.default else None,
                "best": reference.best.throughput,
                "best_setting": reference.best.setting,
                "seconds": gpu[1] if gpu else None,
                "same_framework": reference.same_framework,
            },
            "gpu_over_cpu_best": self.speedup,
            "costs": self.costs(),
            "answer": self.short().replace("**", ""),
        }

    def short(self) -> str:
        """The answer in a few words, for the first screen."""
        cpu, gpu, speedup = self.cpu_wait, self.gpu_wait, self.speedup
        faster = f"GPU x{speedup:.0f} faster" if speedup and speedup >= 10 else (
            f"GPU x{speedup:.1f}" if speedup else "")  # fmt: skip
        if not cpu:
            return faster or "no GPU figure to compare with"
        here = f"{duration(cpu[1])} on this CPU"
        there = f", {duration(gpu[1])} on the GPU ({faster})" if gpu else "; no GPU figure yet"
        if speedup is not None and speedup <= 1.2:
            return f"**No**: {here}, and the GPU is not faster{there}"
        if cpu[1] <= ENOUGH_S:
            return f"**No**: {here}{there}"
        if cpu[1] <= WORKING_DAY_S:
            return f"**A GPU helps**: {here}{there}"
        return f"**Yes**: {here}{there}"


def answers(rows: list[Row], matches: dict[tuple, Reference], prices: Prices) -> list[Answer]:
    """One answer per workload and framework, from the in-container CPU rows (what the user runs), or the
    bare-host ones where there are none."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in cpu_rows(rows):
        groups.setdefault((row.workload, row.framework), []).append(row)
    found = []
    frameworks = ("torch", "tensorflow")
    for (workload, framework), members in sorted(
        groups.items(), key=lambda g: (order(g[0][0]), frameworks.index(g[0][1]) if g[0][1] in frameworks else 9)
    ):
        members.sort(key=lambda r: len(r.tuning))
        best = max(members, key=lambda r: r.throughput)
        default = next((r for r in members if not r.tuning), None)
        found.append(Answer(workload, framework, default, best, tuple(members), matches.get(best.key), prices))
    return found


def order(workload: str) -> int:
    names = list(payload.load("workloads").WORKLOADS)
    return names.index(workload) if workload in names else len(names)


def figure(row: Row) -> str:
    return f"{fmt(row.throughput)} {row.unit}"


def gains_text(answer: Answer) -> str:
    """Which setting gave the gain: each setting tried, as a ratio to the default."""
    if not answer.default or len(answer.tried) < 3:  # one setting beside the default: its ratio is the gain
        return ""
    parts = []
    for row in answer.tried[1:]:
        kept = "" if set(row.tuning) <= set(answer.best.tuning) else ", not kept"
        parts.append(f"{knobs_text(row.tuning)} x{row.throughput / answer.default.throughput:.2f}{kept}")
    return "settings tried against the default: " + "; ".join(parts)


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
    answers: list[Answer]
    verdicts: dict[str, str]
    prices: Prices = field(default_factory=Prices)
    changes: list[dict] | None = None


def verdict(answer: Answer, rows: list[Row], cpu: dict, blas: str | None, busy: bool) -> str:
    """One paragraph: this CPU by default and at its best (and what gave the gain), what that means in time, the
    GPU figure and its source, and the cost where the lab gave prices."""
    best, default, reference = answer.best, answer.default, answer.reference
    place = f"{answer.framework}, {where_label(best)}"
    if default and default is not best:
        cpu_text = (
            f"This CPU ({place}): {figure(default)} by default, {figure(best)} at its best with "
            f"{knobs_text(best.tuning)} (x{answer.gain:.2f})"
        )
    else:
        cpu_text = f"This CPU ({place}): {figure(best)}" + (", and no setting tried was faster" if default else "")
    sentences = [cpu_text]
    if answer.workload == "matmul":
        sentences += [f"{r.precision} is {pct(r.fraction_of_peak)} of the computed peak {fmt(r.peak_gflops)} GFLOP/s"
                      for r in answer.tried if r.fraction_of_peak is not None]  # fmt: skip
        sentences += [n for n in [clock_note(rows, cpu)] if n]
        sentences += [n for r in answer.tried if (n := fp32_gemm_note(r, rows, cpu, blas, busy))]
    if gains := gains_text(answer):
        sentences.append(gains)
    cpu_wait = answer.cpu_wait
    if cpu_wait:
        at_default = answer.wait(default.throughput) if default and default is not best else None
        sentences.append(
            f"{cpu_wait[0]}: {duration(cpu_wait[1])} at its best"
            + (f", {duration(at_default[1])} by default" if at_default else "")
        )
    if reference:
        gpu = reference.best
        text = f"GPU ({reference.source}): {fmt(gpu.throughput)} {gpu.unit} at its best with {knobs_text(gpu.tuning)}"
        if reference.default and reference.default is not gpu:
            text += f" ({fmt(reference.default.throughput)} by default)"
        text += f", x{answer.speedup:.1f} this CPU at its best"
        if answer.gpu_wait:
            text += f"; {answer.gpu_wait[0]} in {duration(answer.gpu_wait[1])}"
        sentences.append(text)
        if not reference.same_framework:
            other = reference.run.framework
            sentences.append(TORCH_ONLY if other == "torch" else f"the GPU figure is {other}'s: no {answer.framework} "
                             "GPU figure yet")  # fmt: skip
    if costs := answer.costs():
        sentences.append(f"Cost of {cpu_wait[0] if cpu_wait else 'it'}: {costs}")
    return ". ".join(s.rstrip(".") for s in sentences) + "."


def analyse(
    document: Document, references: list[Run], earlier: Document | None = None, prices: Prices | None = None
) -> Analysis:
    prices = prices or Prices()
    rows = summarise(document.runs)
    gpu = gpu_runs(document.runs, references)
    matches = {row.key: ref for row in cpu_rows(rows) if (ref := find_reference(row, gpu, document.mode))}
    busy = busy_warning(document)
    found = answers(rows, matches, prices)
    cpu = next((run.cpu for run in document.runs if run.device == "cpu"), {})
    blas = {run.framework: run.framework_extra.get("blas") for run in document.runs}
    verdicts: dict[str, str] = {}
    for answer in found:
        text = verdict(answer, rows, cpu, blas.get(answer.framework), busy is not None)
        if answer.workload in verdicts:  # another framework: a paragraph of its own
            text = f"{verdicts[answer.workload]}\n\n{text}"
        verdicts[answer.workload] = text
    for workload in verdicts:  # said once per workload, whichever frameworks lack a GPU figure
        lacking = [a for a in found if a.workload == workload and a.reference is None]
        if lacking:
            verdicts[workload] += "\n\n" + (model_no_reference(lacking[0].best.config) if workload == "model"
                                             else NO_REFERENCE)  # fmt: skip
    return Analysis(
        document=document,
        rows=rows,
        ratios=container_ratios(rows),
        references=references,
        gpu=gpu,
        matches=matches,
        busy=busy,
        answers=found,
        verdicts=verdicts,
        prices=prices,
        changes=compare(summarise(earlier.runs), rows) if earlier else None,
    )
