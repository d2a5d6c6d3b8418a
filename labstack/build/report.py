"""The table `invoke build` ends with."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from labstack.build.images import BuildResult
from labstack.matrix import GB


def print_build_summary(results: list[BuildResult], console: Console | None = None) -> None:
    table = Table(title="labstack build")
    for column in ("image", "tag", "size", "build"):
        table.add_column(column, justify="right" if column in ("size", "build") else "left")
    for result in results:
        table.add_row(
            result.image.repository, result.image.tag, f"{result.size_bytes / GB:.2f} GB", f"{result.seconds:.0f} s"
        )
    (console or Console()).print(table)
