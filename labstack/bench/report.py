"""The benchmark report, made from the JSON only: a Markdown page with tables and a verdict per workload, and a
PNG chart of throughput (and speedup over this machine where a GPU reference exists)."""

from __future__ import annotations

from pathlib import Path

from labstack.bench.stats import (
    container_ratios,
    cpu_details,
    cpu_peak,
    find_reference,
    load_references,
    summarise,
    with_own_gpu,
)

REFERENCE_COMMAND = (
    "python3 payload/bench.py --device cuda --framework torch > references/<gpu>-torch-full.json "
    "(and again with --quick > references/<gpu>-torch-quick.json)"
)
NO_REFERENCE = (
    "No GPU reference has been measured yet for this workload and size, so no GPU figure is given: on a GPU host "
    f"(no Docker or network needed) run `{REFERENCE_COMMAND}` and commit the files (references/README.md)."
)
WORKLOAD_TITLES = {
    "matmul": "Large matrix multiply (GEMM)",
    "mnist_cnn": "Small CNN on MNIST (28x28x1, batch 128)",
    "resnet": "ResNet",
    "transformer": "Transformer encoder (BERT-like)",
}
IMAGENET_IMAGES = 1_281_167


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


def describe_config(row: dict) -> str:
    c = row.get("config") or {}
    if row["workload"] == "resnet":
        return f"ResNet-{c['depth']}, {c['image_size']}x{c['image_size']}, batch {c['batch']}"
    if row["workload"] == "transformer":
        return f"{c['layers']} layers x {c['hidden']} hidden, {c['heads']} heads, seq {c['seq']}, batch {c['batch']}"
    if row["workload"] == "mnist_cnn":
        return f"batch {c['batch']}"
    return ""


def where_label(row: dict) -> str:
    return "container" if row["where"] == "image" else "bare host"


def cpu_rows(rows: list[dict]) -> list[dict]:
    """The CPU figures a verdict quotes: in-container ones first (what the user runs), bare-host otherwise."""
    chosen: dict[tuple, dict] = {}
    for row in rows:
        if row["device"] != "cpu":
            continue
        key = (row["workload"], row["precision"], row["framework"])
        if key not in chosen or row["where"] == "image":
            chosen[key] = row
    return list(chosen.values())


def reference_sentence(row: dict, reference: dict) -> str:
    run = reference["run"]
    when = (run.get("started") or "")[:10] or "an unknown date"
    device = run.get("device_name") or "GPU"
    framework = "" if reference["same_framework"] else f" ({run['framework']}; no {row['framework']} reference yet)"
    parts = []
    for label, result in (("", reference["fp32"]), (" with bf16 mixed precision", reference["amp"])):
        if result:
            speedup = result["throughput"] / row["throughput"]
            parts.append(f"{fmt(result['throughput'])} {row['unit']}{label} (x{speedup:.1f})")
    source = f"your GPU, {device}" if run.get("own") else f"reference {device}"
    text = (
        f"your CPU ({row['framework']}, {where_label(row)}): {fmt(row['throughput'])} {row['unit']}; {source}"
        f"{framework}: {' and '.join(parts)}, measured on {when}"
    )
    best = max((r for r in (reference["fp32"], reference["amp"]) if r), key=lambda r: r["throughput"])
    speedup = best["throughput"] / row["throughput"]
    text += f": a GPU would make this x{speedup:.1f} faster"
    if row["workload"] == "mnist_cnn":
        text += (
            f"; 10 epochs of MNIST: {duration(10 * row['epoch_s'])} here vs "
            f"{duration(10 * 60_000 / best['throughput'])} there"
        )
    return text + "."


def time_scale(row: dict) -> str:
    """What the throughput means in the time a researcher waits."""
    if row["workload"] == "mnist_cnn":
        return f"10 epochs of MNIST: {duration(10 * row['epoch_s'])}"
    if row["workload"] == "resnet":
        return f"an ImageNet-sized epoch, 1.28 M images: {duration(IMAGENET_IMAGES / row['throughput'])}"
    if row["workload"] == "transformer":
        return f"{fmt(row['tokens_per_s'])} tokens/s, 100 M training tokens: {duration(1e8 / row['tokens_per_s'])}"
    return ""


def clock_note(rows: list[dict], env: dict | None) -> str | None:
    """When a GEMM beats the computed peak, the clock that was read is below the one the cores run at."""
    best = max((r.get("fraction_of_peak") or 0 for r in rows if r["workload"] == "matmul" and r["device"] == "cpu"),
               default=0)  # fmt: skip
    peak = cpu_peak(env or {})
    if best <= 1.0 or not peak:
        return None
    return (
        f"The fastest GEMM reached {pct(best)} of the computed peak, so the cores run faster than the clock that "
        f"was read ({peak.clock_source}): at {best * peak.clock_mhz / 1000:.1f} GHz or more, and every fraction "
        "of peak here is overstated by that factor"
    )


def fp32_gemm_note(row: dict, rows: list[dict], env: dict | None, blas: str | None, busy: bool) -> str | None:
    """Why an fp32 GEMM is below 70% of the computed peak, from what the runs recorded."""
    fraction = row.get("fraction_of_peak")
    if fraction is None or fraction >= 0.7 or row["precision"] != "fp32":
        return None
    notes = ["the machine was busy (see the warning above), so part of the gap may be contention"] if busy else []
    other = [
        r for r in rows
        if r["workload"] == "matmul" and r["precision"] == "fp32" and r["framework"] != row["framework"]
        and r["device"] == "cpu" and (r.get("fraction_of_peak") or 0) > fraction * 1.3
    ]  # fmt: skip
    if other:
        notes.append(
            f"{other[0]['framework']} reached {pct(other[0]['fraction_of_peak'])} on the same CPU, so the limit is "
            f"{row['framework']}'s GEMM library" + (f" ({blas})" if blas else "") + ", not the hardware"
        )
    vendor = cpu_details(env or {}).get("vendor_id")
    if blas == "mkl" and vendor == "AuthenticAMD":
        notes.append(
            "PyTorch's fp32 GEMM is Intel MKL, which picks its AVX-512 kernels for Intel CPUs and typically "
            "runs AVX2 kernels on AMD: at most half of this AVX-512 peak"
        )
    if not notes:
        notes.append("the BLAS library or a clock lower than the one read can each cause this")
    return f"{row['framework']} fp32 is below 70% of the peak: " + "; ".join(notes)


def verdicts(rows: list[dict], references: list[dict], runs: list[dict]) -> dict[str, str]:
    """One paragraph per workload: this CPU's figures, what they mean in time, and this machine's GPU or the
    committed GPU reference."""
    references = with_own_gpu(runs, references)
    env = next((run.get("environment") for run in runs if run.get("device") == "cpu"), None)
    blas = {run["framework"]: (run.get("framework_extra") or {}).get("blas") for run in runs}
    by_workload: dict[str, list[dict]] = {}
    for row in sorted(cpu_rows(rows), key=lambda r: (r["workload"], r["framework"], r["precision"])):
        by_workload.setdefault(row["workload"], []).append(row)
    out = {}
    for workload, members in by_workload.items():
        if workload == "matmul":
            figures = [
                f"{r['framework']} {r['precision']} {fmt(r['throughput'])} GFLOP/s "
                f"({pct(r.get('fraction_of_peak'))} of {fmt(r.get('peak_gflops'))})"
                for r in members
            ]
            sentences = ["This CPU, against its computed peak: " + ", ".join(figures)]
            sentences += [n for n in [clock_note(rows, env)] if n]
            busy = busy_warning({"runs": runs, "host": {"cpu": (env or {}).get("cpu")}}) is not None
            sentences += [
                note for r in members if (note := fp32_gemm_note(r, rows, env, blas.get(r["framework"]), busy))
            ]
        else:
            figures = [f"{r['framework']} {fmt(r['throughput'])} {r['unit']} ({time_scale(r)})" for r in members]
            sentences = [f"This CPU ({describe_config(members[0])}): " + "; ".join(figures)]
        found = [(r, ref) for r in members if (ref := find_reference(r, references))]
        sentences += [reference_sentence(r, ref) for r, ref in found] or [NO_REFERENCE]
        out[workload] = ". ".join(s.rstrip(".") for s in sentences) + "."
    return out


def environment_lines(doc: dict) -> list[str]:
    lines = []
    host = doc.get("host") or {}
    cpu = host.get("cpu") or {}
    lines.append(f"- date: {doc.get('created')}; mode: {doc.get('mode')}; repeats: {doc.get('repeat')}; "
                 f"labstack {(host.get('labstack_revision') or 'unknown')[:12]}"
                 + (" (uncommitted changes)" if host.get("labstack_dirty") else ""))  # fmt: skip
    lines.append(
        f"- host CPU: {cpu.get('model')}, {cpu.get('usable_cpus')} usable CPUs, ISA {', '.join(cpu.get('isa') or [])}"
    )
    for run in doc.get("runs", []):
        env = run.get("environment") or {}
        threads = run.get("threads") or {}
        other, steal = run.get("other_load"), run.get("cpu_steal")
        lines.append(
            f"- {run['framework']} {run.get('framework_version')} on {run['device']} ({run.get('device_name')}), "
            f"{'container ' + str(run.get('image')) if run.get('where') == 'image' else 'bare host'}: "
            f"{threads.get('intra_op')} threads for {(env.get('cpu') or {}).get('usable_cpus')} usable CPUs, "
            f"other processes' runnable tasks {fmt(other, 2)} on average, "
            f"CPU time stolen by the hypervisor {pct(steal)}"
            + (f", image {str(run.get('image_id'))[:19]}" if run.get("image_id") else "")
        )
    peak = cpu_peak((doc.get("runs") or [{}])[0].get("environment") or {}) if doc.get("runs") else None
    if peak:
        lines.append(f"- CPU peak: {peak.describe()}; {peak.path.why}")
    return lines


BUSY_FRACTION = 0.25  # other processes' runnable tasks, as a fraction of the CPUs, that make a run contended


def busy_warning(doc: dict) -> str | None:
    """Contended when other processes kept runnable tasks on more than a quarter of the CPUs during a run
    (bench.py samples this; older records only have the load average, which also counts the run itself)."""
    cpus = ((doc.get("host") or {}).get("cpu") or {}).get("usable_cpus") or 1
    runs = doc.get("runs", [])
    others = [run["other_load"] for run in runs if run.get("other_load") is not None]
    if others and max(others) > BUSY_FRACTION * cpus:
        return (
            f"**The machine was busy**: other processes kept on average up to {max(others):.1f} tasks runnable "
            f"on its {cpus} CPUs during a run; these figures are contended: measure again on a quiet machine "
            "before relying on them."
        )
    loads = [max(run.get("loadavg_start") or [0]) for run in runs if run.get("other_load") is None]
    if loads and max(loads) > 0.5 * cpus:
        return (
            f"**The machine was busy** (load average up to {max(loads):.1f} on {cpus} CPUs when runs started): "
            "these figures are contended; measure again on a quiet machine before relying on them."
        )
    return None


def render_markdown(doc: dict, references: list[dict], chart: str | None = "benchmark.png") -> str:
    rows = doc.get("summary") or summarise(doc.get("runs", []))
    ratios = doc.get("container_ratios") or container_ratios(rows)
    out = ["# labstack benchmark: do you need a GPU?", ""]
    if doc.get("interrupted"):
        out += ["**Interrupted**: only the workloads measured before the interrupt are shown.", ""]
    warning = busy_warning(doc)
    if warning:
        out += [warning, ""]
    out += ["## Verdicts", ""]
    found = verdicts(rows, references, doc.get("runs", []))
    for workload, paragraph in found.items():
        out += [f"### {WORKLOAD_TITLES.get(workload, workload)}", "", paragraph, ""]
    if not found:
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
    for row in sorted(rows, key=lambda r: (r["workload"], r["precision"], r["framework"], r["where"])):
        out.append(
            f"| {row['framework']} {row.get('framework_version') or ''} | {where_label(row)} | "
            f"{row.get('device_name') or row['device']} | {row['workload']} | {row['precision']} | "
            f"{describe_config(row)} | {fmt(row['throughput'])} {row['unit']} | "
            f"{pct(row.get('run_spread')) if row.get('run_spread') is not None else 'one run'} | "
            f"{pct(row.get('step_spread_iqr'))} | {pct(row['fraction_of_peak']) if 'fraction_of_peak' in row else ''} |"
        )
    errors = [(run, e) for run in doc.get("runs", []) for e in run.get("errors", [])]
    if errors:
        out += ["", "Failed:", *(f"- {run['framework']} {e.get('workload')} {e.get('precision')}: {e['error']}"
                                 for run, e in errors)]  # fmt: skip
    if ratios:
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
        for r in ratios:
            out.append(
                f"| {r['framework']} | {r['workload']} | {r['precision']} | {fmt(r['image'])} | {fmt(r['local'])} | "
                f"{r['ratio']:.3f} | {pct(r['noise'])} |"
            )
    changes = (doc.get("compare") or {}).get("changes")
    if doc.get("compare"):
        out += ["", f"## Compared with {doc['compare']['file']}", ""]
        if changes:
            out += ["| framework | where | workload | precision | before | now | change | noise | verdict |",
                    "|---|---|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
            for c in changes:
                flag = "**REGRESSION**" if c["status"] == "regression" else c["status"]
                out.append(
                    f"| {c['framework']} | {c['where']} | {c['workload']} | {c['precision']} | {fmt(c['old'])} | "
                    f"{fmt(c['new'])} | {100 * c['change']:+.1f}% | {pct(c['noise'])} | {flag} |"
                )
        else:
            out.append("No workload was measured in both runs with the same size.")
    out += ["", "## Environment", "", *environment_lines(doc)]
    if references:
        out += ["", "## GPU references", ""]
        for run in references:
            nvml = (run.get("environment") or {}).get("nvml") or {}
            out.append(
                f"- {run.get('reference_file')}: {run.get('device_name')}, driver {nvml.get('driver_version', '?')}, "
                f"{run['framework']} {run.get('framework_version')}, {run.get('mode')} mode, measured "
                f"{run.get('started')}, labstack {(run.get('labstack_revision') or 'unknown')[:12]}"
            )
    return "\n".join(out) + "\n"


def render_chart(doc: dict, references: list[dict], path: Path) -> Path:
    """One panel per workload and precision: bars of throughput for each framework and place, plus the GPU
    reference where one exists, labelled with its speedup over this machine's CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc.get("summary") or summarise(doc.get("runs", []))
    references = with_own_gpu(doc.get("runs", []), references)
    panels: dict[tuple, list[tuple[str, float, str]]] = {}
    units: dict[tuple, str] = {}
    for row in sorted(rows, key=lambda r: (r["workload"], r["precision"], r["framework"], r["where"])):
        key = (row["workload"], row["precision"])
        units[key] = row["unit"]
        label = f"{row['framework']}\n{where_label(row)}" + ("\nGPU" if row["device"] == "cuda" else "")
        panels.setdefault(key, []).append((label, row["throughput"], ""))
    for row in cpu_rows(rows):
        reference = find_reference(row, references)
        if reference and row["where"] == "image" and not reference["run"].get("own"):  # own GPU: a bar already
            key = (row["workload"], row["precision"])
            for label, result in (("", reference["fp32"]), (" bf16", reference["amp"])):
                if result:
                    name = f"{reference['run'].get('device_name', 'GPU')}{label}\n{reference['run']['framework']}"
                    speedup = f"x{result['throughput'] / row['throughput']:.1f}"
                    if all(existing[0] != name for existing in panels[key]):
                        panels[key].append((name, result["throughput"], speedup))
    count = max(1, len(panels))
    columns = min(3, count)
    lines = (count + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False)
    for axis, (key, bars) in zip(axes.flat, sorted(panels.items()), strict=False):
        labels = [b[0] for b in bars]
        values = [b[1] for b in bars]
        colors = ["tab:green" if b[2] else "tab:blue" for b in bars]
        drawn = axis.bar(range(len(bars)), values, color=colors)
        axis.set_xticks(range(len(bars)), labels, fontsize=7)
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
    if not references:
        title += "; no GPU reference measured yet"
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(doc: dict, out_dir: Path, references: list[dict] | None = None) -> list[Path]:
    references = load_references() if references is None else references
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = render_chart(doc, references, out_dir / "benchmark.png")
    markdown = out_dir / "benchmark.md"
    markdown.write_text(render_markdown(doc, references, chart=chart.name))
    return [markdown, chart]
