"""Tables a person reads at the end of a long command."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labstack.build import BuildResult
from labstack.engine import GB
from labstack.validate import TargetResult, table_rows


def print_build_summary(results: list[BuildResult], console: Console | None = None) -> None:
    table = Table(title="labstack build")
    for column in ("image", "tag", "size", "build"):
        table.add_column(column, justify="right" if column in ("size", "build") else "left")
    for result in results:
        table.add_row(
            result.image.repository, result.image.tag, f"{result.size_bytes / GB:.2f} GB", f"{result.seconds:.0f} s"
        )
    (console or Console()).print(table)


STYLES = {"pass": "green", "FAIL": "bold red", "skip": "yellow"}


def target_line(result: TargetResult) -> str:
    """One progress line per finished target."""
    mark = "[red]✗[/]" if result.count("fail") else "[green]✓[/]"
    counts = ", ".join(
        f"{result.count(o)} {w}" for o, w in (("pass", "passed"), ("fail", "failed"), ("skip", "skipped"))
    )
    return f"{mark} {escape(result.target.label)}: {counts} ({result.seconds:.1f} s)"


def print_validation(results: list[TargetResult], console: Console | None = None) -> None:
    """The check x target table, then every failure and skip with its reason (the part a person acts on)."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)  # logs: do not cut check names
    columns, rows = table_rows(results)
    table = Table(title="labstack validate")
    table.add_column("check")
    for column in columns:
        table.add_column(column, justify="center")
    for check, *cells in rows:
        table.add_row(escape(check), *(f"[{STYLES[c]}]{c}[/]" if c else "·" for c in cells))
    console.print(table)
    for word, outcome in (("failed", "fail"), ("skipped", "skip")):
        reasons = {}
        for result in results:
            for r in result.results:
                if r["outcome"] == outcome:
                    reasons.setdefault(escape(r["reason"] or ""), []).append(
                        escape(f"{result.target.label}: {r['check']}")
                    )
        for reason, where in reasons.items():
            shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
            console.print(f"[{STYLES['FAIL' if outcome == 'fail' else 'skip']}]{word}[/] {shown}\n    {reason}")
