"""The benchmark report, made from the analysis of the JSON only: a Markdown page with tables and a verdict per
workload, and a PNG chart of throughput (and the speedup over this machine where a GPU figure exists)."""

from __future__ import annotations

from pathlib import Path

from labstack import payload
from labstack.bench.results import Document
from labstack.bench.stats import cpu_peak
from labstack.bench.verdict import Analysis, cpu_rows, fmt, pct, where_label


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
    out += ["## Verdicts", ""]
    for workload, paragraph in analysis.verdicts.items():
        config = next((r.config for r in analysis.rows if r.workload == workload), {})
        out += [f"### {workloads.title(workload, config)}", "", paragraph, ""]
    if not analysis.verdicts:
        out += ["No CPU results were measured.", ""]
    if chart:
        out += [f"![throughput per workload]({chart})", ""]
    out += [
        "## Results",
        "",
        "Median throughput over the timed steps (warm-up steps not counted); with repeats, the median of the runs' "
        "medians. Spread: (max - min) / median of the runs' medians (repeats), and IQR / median of the steps.",
        "",
        "| framework | where | device | workload | precision | size | throughput | run spread | step spread | "
        "of peak |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in sorted(analysis.rows, key=lambda r: (r.workload, r.precision, r.framework, r.where)):
        out.append(
            f"| {row.framework} {row.framework_version or ''} | {where_label(row)} | {row.device_name or row.device} "
            f"| {row.workload} | {row.precision} | {workloads.describe(row.workload, row.config)} | "
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
            "| framework | workload | precision | container | bare host | ratio | noise |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in analysis.ratios:
            out.append(
                f"| {r['framework']} | {r['workload']} | {r['precision']} | {fmt(r['image'])} | {fmt(r['local'])} | "
                f"{r['ratio']:.3f} | {pct(r['noise'])} |"
            )
    if analysis.changes is not None:
        out += ["", f"## Compared with {document.compare_file}", ""]
        if analysis.changes:
            out += ["| framework | where | workload | precision | before | now | change | noise | verdict |",
                    "|---|---|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
            for c in analysis.changes:
                flag = "**REGRESSION**" if c["status"] == "regression" else c["status"]
                out.append(
                    f"| {c['framework']} | {c['where']} | {c['workload']} | {c['precision']} | {fmt(c['old'])} | "
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


def chart_panels(analysis: Analysis) -> tuple[dict[tuple, list[tuple[str, float, str]]], dict[tuple, str]]:
    """(workload, precision) -> bars (label, throughput, speedup text), and each panel's unit."""
    panels: dict[tuple, list[tuple[str, float, str]]] = {}
    units: dict[tuple, str] = {}
    for row in sorted(analysis.rows, key=lambda r: (r.workload, r.precision, r.framework, r.where)):
        key = (row.workload, row.precision)
        units[key] = row.unit
        label = f"{row.framework}\n{where_label(row)}" + ("\nGPU" if row.device == "cuda" else "")
        panels.setdefault(key, []).append((label, row.throughput, ""))
    for row in cpu_rows(analysis.rows):
        reference = analysis.matches.get(row.key)
        if not reference or row.where != "image" or reference.run.own:  # own GPU: a bar of its own already
            continue
        key = (row.workload, row.precision)
        for label, result in (("", reference.plain), (" bf16", reference.mixed)):
            if result:
                name = f"{reference.run.device_name or 'GPU'}{label}\n{reference.run.framework}"
                if all(existing[0] != name for existing in panels[key]):
                    panels[key].append((name, result.throughput, f"x{result.throughput / row.throughput:.1f}"))
    return panels, units


def render_chart(analysis: Analysis, path: Path) -> Path:
    """One panel per workload and precision: bars of throughput for each framework and place, plus the GPU
    figure where one exists, labelled with its speedup over this machine's CPU."""
    import matplotlib  # heavy (half a second): only when a chart is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, units = chart_panels(analysis)
    count = max(1, len(panels))
    columns = min(3, count)
    lines = (count + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False)
    for axis, (key, bars) in zip(axes.flat, sorted(panels.items()), strict=False):
        drawn = axis.bar(
            range(len(bars)), [b[1] for b in bars], color=["tab:green" if b[2] else "tab:blue" for b in bars]
        )
        axis.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        axis.set_title(f"{key[0]} {key[1]}", fontsize=10)
        axis.set_ylabel(units[key], fontsize=8)
        if any(b[2] for b in bars):
            axis.set_yscale("log")
        for bar, (_, value, speedup) in zip(drawn, bars, strict=True):
            axis.annotate(speedup or fmt(value), (bar.get_x() + bar.get_width() / 2, value), ha="center",
                          va="bottom", fontsize=7)  # fmt: skip
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    title = "labstack benchmark: throughput per workload (higher is better)"
    if not analysis.gpu:
        title += "; no GPU reference measured yet"
    figure.suptitle(title, fontsize=11)
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
