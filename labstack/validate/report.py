"""What `invoke validate` shows a person: a line per finished target, then the check x target table and every
failure and skip with its reason."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labstack.validate.run import TargetResult, table_rows

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
