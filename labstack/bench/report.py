"""The benchmark report, made from the analysis of the JSON only: a Markdown page with tables and a verdict per
workload, and a PNG chart of throughput (and the speedup over this machine where a GPU figure exists)."""

from __future__ import annotations

from pathlib import Path

from labstack import payload
from labstack.bench.results import Document
from labstack.bench.stats import cpu_peak
from labstack.bench.verdict import (
    ENOUGH_S,
    WORKING_DAY_S,
    Analysis,
    Answer,
    duration,
    fmt,
    knobs_text,
    pct,
    title,
    where_label,
)


def answer_cells(answer: Answer) -> list[str]:
    """workload | what you wait for | this CPU by default | at its best | GPU | answer: the first screen."""
    wait = answer.cpu_wait

    def at(row) -> str:
        if row is None:
            return "not measured"
        found = answer.wait(row.throughput)
        return (f"{duration(found[1])} ({fmt(row.throughput)} {row.unit})" if found else
                f"{fmt(row.throughput)} {row.unit}")  # fmt: skip

    best = at(answer.best) + f", {knobs_text(answer.best.tuning)}"
    if answer.gain and answer.gain != 1:
        best += f", x{answer.gain:.2f}"
    reference = answer.reference
    if reference:
        gpu = at(reference.best) + f"; {reference.source}"
        if not reference.same_framework:
            gpu += f" ({reference.run.framework} only)"
    else:
        gpu = "no reference measured yet"
    verdict = answer.short()
    if costs := answer.costs():
        verdict += f"; cost {costs}"
    return [
        f"{title(answer.workload, answer.best.config)} ({answer.framework})",
        wait[0] if wait else "throughput",
        at(answer.default),
        best,
        gpu,
        verdict,
    ]


def first_screen(analysis: Analysis) -> list[str]:
    out = [
        "| workload | what you wait for | this CPU, default | this CPU at its best | GPU | do you need a GPU? |",
        "|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(answer_cells(a)) + " |" for a in analysis.answers]
    out += [
        "",
        f"The answer reads the time on this CPU at its best: **No** within {duration(ENOUGH_S)}, **A GPU helps** "
        f"within a working day ({duration(WORKING_DAY_S)}), **Yes** beyond; the GPU column is this machine's own "
        "GPU, else a reference measured on a GPU host and committed in `references/`.",
    ]
    if analysis.prices.gpu or analysis.prices.cpu:
        given = [p.describe() for p in (analysis.prices.cpu, analysis.prices.gpu) if p]
        out.append(f"Costs use the prices in the lab's configuration: {'; '.join(given)}.")
    else:
        out.append("No prices are configured, so no costs are given (set `labstack.gpu_hour_price` and "
                   "`labstack.cpu_hour_price`, docs/configuration.md).")  # fmt: skip
    return out


def environment_lines(document: Document) -> list[str]:
    host = document.host
    cpu = host.get("cpu") or {}
    lines = [
        f"- date: {document.created}; mode: {document.mode}; repeats: {document.repeat}; "
        f"labstack {(host.get('labstack_revision') or 'unknown')[:12]}"
        + (" (uncommitted changes)" if host.get("labstack_dirty") else ""),
        f"- host CPU: {cpu.get('model')}, {cpu.get('usable_cpus')} usable CPUs, ISA {', '.join(cpu.get('isa') or [])}",
    ]
    for run in document.runs:
        lines.append(
            f"- {run.framework} {run.framework_version} on {run.device} ({run.device_name}), "
            f"{'container ' + str(run.image) if run.where == 'image' else 'bare host'}: "
            f"{run.threads.get('intra_op')} threads for {run.usable_cpus} usable CPUs, "
            f"other processes' runnable tasks {fmt(run.other_load, 2)} on average, "
            f"CPU time stolen by the hypervisor {pct(run.cpu_steal)}"
            + (f", image {str(run.image_id)[:19]}" if run.image_id else "")
        )
    peak = cpu_peak(document.runs[0].cpu) if document.runs else None
    if peak:
        lines.append(f"- CPU peak: {peak.describe()}; {peak.path.why}")
    return lines


def render_markdown(analysis: Analysis, chart: str | None = "benchmark.png") -> str:
    document, workloads = analysis.document, payload.load("workloads")
    out = ["# labstack benchmark: do you need a GPU?", ""]
    if document.interrupted:
        out += ["**Interrupted**: only the workloads measured before the interrupt are shown.", ""]
    if analysis.busy:
        out += [analysis.busy, ""]
    if analysis.answers:
        out += [*first_screen(analysis), ""]
    if chart:
        out += [f"![time to train per workload, this CPU against the GPU]({chart})", ""]
    out += ["## Verdicts", ""]
    for workload, paragraph in analysis.verdicts.items():
        config = next(a.best.config for a in analysis.answers if a.workload == workload)
        out += [f"### {title(workload, config)}", "", paragraph, ""]
    if not analysis.verdicts:
        out += ["No CPU results were measured.", ""]
    out += [
        "## Results",
        "",
        "Median throughput over the timed steps (warm-up steps not counted); with repeats, the median of the runs' "
        "medians. Spread: (max - min) / median of the runs' medians (repeats), and IQR / median of the steps.",
        "",
        "| framework | where | device | workload | setting | precision | size | throughput | run spread | "
        "step spread | of peak |",
        "|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in sorted(analysis.rows, key=lambda r: (r.workload, r.framework, r.where, r.device, len(r.tuning))):
        out.append(
            f"| {row.framework} {row.framework_version or ''} | {where_label(row)} | {row.device_name or row.device} "
            f"| {row.workload} | {row.setting} | {row.precision} | {workloads.describe(row.workload, row.config)} | "
            f"{fmt(row.throughput)} {row.unit} | {pct(row.run_spread) if row.run_spread is not None else 'one run'} "
            f"| {pct(row.step_spread_iqr)} | {pct(row.fraction_of_peak) if row.workload == 'matmul' else ''} |"
        )
    errors = [(run, e) for run in document.runs for e in run.errors]
    if errors:
        out += ["", "Failed:", *(f"- {run.framework} {e.get('workload')} {e.get('precision')}: {e['error']}"
                                 for run, e in errors)]  # fmt: skip
    if analysis.ratios:
        out += [
            "",
            "## Container overhead",
            "",
            "In-container throughput divided by the same wheels on the bare host, measured in the same run "
            "(1.00 = no overhead; differences within the noise are not overhead).",
            "",
            "| framework | workload | setting | container | bare host | ratio | noise |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in analysis.ratios:
            out.append(
                f"| {r['framework']} | {r['workload']} | {r['setting']} | {fmt(r['image'])} | {fmt(r['local'])} | "
                f"{r['ratio']:.3f} | {pct(r['noise'])} |"
            )
    if analysis.changes is not None:
        out += ["", f"## Compared with {document.compare_file}", ""]
        if analysis.changes:
            out += ["| framework | where | workload | setting | before | now | change | noise | verdict |",
                    "|---|---|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
            for c in analysis.changes:
                flag = "**REGRESSION**" if c["status"] == "regression" else c["status"]
                out.append(
                    f"| {c['framework']} | {c['where']} | {c['workload']} | {c['setting']} | {fmt(c['old'])} | "
                    f"{fmt(c['new'])} | {100 * c['change']:+.1f}% | {pct(c['noise'])} | {flag} |"
                )
        else:
            out.append("No workload was measured in both runs with the same size.")
    out += ["", "## Environment", "", *environment_lines(document)]
    if analysis.references:
        out += ["", "## GPU references", ""]
        for run in analysis.references:
            out.append(
                f"- {run.reference_file}: {run.device_name}, driver {run.driver}, {run.framework} "
                f"{run.framework_version}, {run.mode} mode, measured {run.started}, labstack "
                f"{(run.labstack_revision or 'unknown')[:12]}"
            )
    return "\n".join(out) + "\n"


COLOURS = {"default": "tab:gray", "best": "tab:blue", "gpu": "tab:green"}
TIME_TICKS = {1: "1 s", 10: "10 s", 60: "1 min", 600: "10 min", 3600: "1 h", 6 * 3600: "6 h", 86400: "1 day",
              7 * 86400: "1 week", 30 * 86400: "30 days"}  # fmt: skip


def chart_bar(answer: Answer, label: str, row, kind: str, note: str = "") -> tuple[str, float, str, str]:
    """A bar: the yardstick's time at the row's throughput where the workload has one, else the throughput."""
    found = answer.wait(row.throughput)
    value = found[1] if found else row.throughput
    return label, value, (duration(found[1]) if found else fmt(row.throughput)) + note, kind


def chart_panels(analysis: Analysis) -> list[tuple[str, str, list[tuple[str, float, str, str]]]]:
    """One panel per workload: (title, y label, bars). A bar is (label, value, text, kind): this CPU by default and
    at its best, then the GPU figure, in time to train (the workload's yardstick) where it has one, else in
    throughput. Kind picks the colour."""
    panels: dict[str, tuple[str, str, list]] = {}
    for answer in analysis.answers:
        wait = answer.cpu_wait
        heading = title(answer.workload, answer.best.config)
        panel = panels.setdefault(answer.workload, (heading, f"time for {wait[0]}" if wait else answer.best.unit, []))
        bars = panel[2]
        many = len({a.framework for a in analysis.answers if a.workload == answer.workload}) > 1
        prefix = f"{answer.framework}\n" if many else ""

        if answer.default and answer.default is not answer.best:
            bars.append(chart_bar(answer, f"{prefix}CPU default", answer.default, "default"))
        bars.append(chart_bar(answer, f"{prefix}CPU best\n{knobs_text(answer.best.tuning)}", answer.best, "best"))
        reference = answer.reference
        if reference and all(b[3] != "gpu" for b in bars):
            run = reference.run
            name = f"{run.device_name or 'GPU'}".replace("NVIDIA ", "")
            source = "here" if run.own else f"ref. {run.started[:10]}"
            label = f"{name}\n{run.framework}, {source}"
            bars.append(chart_bar(answer, label, reference.best, "gpu", f", x{answer.speedup:.0f} the CPU's best"))
    return list(panels.values())


def render_chart(analysis: Analysis, path: Path) -> Path:
    """Do you need a GPU? One panel per workload, log scale: the time its yardstick takes on this CPU by default,
    at its best and on the GPU (throughput for the GEMM), each bar labelled with its figure."""
    import matplotlib  # heavy (half a second): only when a chart is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator

    panels = chart_panels(analysis)
    count = max(1, len(panels))
    columns = min(2, count)
    lines = (count + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(6.2 * columns, 3.8 * lines), squeeze=False)
    for axis, (heading, ylabel, bars) in zip(axes.flat, panels, strict=False):
        drawn = axis.bar(range(len(bars)), [b[1] for b in bars], color=[COLOURS[b[3]] for b in bars])
        axis.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        axis.set_title(heading, fontsize=10)
        axis.set_ylabel(f"{ylabel} (log scale)", fontsize=8)
        axis.set_yscale("log")
        axis.margins(y=0.25)
        axis.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        if ylabel.startswith("time for"):  # seconds, on a clock's ticks
            axis.yaxis.set_major_locator(FixedLocator(list(TIME_TICKS)))
            axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: TIME_TICKS.get(round(v), duration(v))))
        else:
            axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
            axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
        axis.tick_params(axis="y", labelsize=7)
        for bar, (_, value, text, _) in zip(drawn, bars, strict=True):
            axis.annotate(text, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    heading = "Do you need a GPU? This CPU (default, at its best) against the GPU; time to train, lower is better"
    if not any(a.reference for a in analysis.answers):
        heading += "\n(no GPU figure: none measured here, no reference committed)"
    figure.suptitle(heading, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(analysis: Analysis, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = render_chart(analysis, out_dir / "benchmark.png")
    markdown = out_dir / "benchmark.md"
    markdown.write_text(render_markdown(analysis, chart=chart.name))
    return [markdown, chart]
