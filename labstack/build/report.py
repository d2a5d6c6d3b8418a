"""The table `invoke build` ends with."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from labstack.build.images import BuildResult
from labstack.matrix import GB


def print_build_summary(results: list[BuildResult], console: Console | None = None) -> None:
    table = Table(title="labstack build")
    for column in ("image", "tag", "size", "layer adds", "build"):
        table.add_column(column, justify="left" if column in ("image", "tag") else "right")
    for result in results:
        added = "" if result.added_bytes is None else f"+{result.added_bytes / 1000**2:.0f} MB"
        table.add_row(
            result.image.repository, result.tag, f"{result.size_bytes / GB:.2f} GB", added, f"{result.seconds:.0f} s"
        )
    (console or Console()).print(table)
