"""Tables as Markdown: pipe tables through pandas ``to_markdown`` (tabulate), each with its caption."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from uadbench.records import Failure, ResultRecord
from uadbench.report.build import Table, tables_for
from uadbench.report.frame import FLOOR

__all__ = ["failures_markdown", "leaderboard_markdown", "table_markdown"]


def table_markdown(table: Table) -> str:
    """``table`` as a pipe table (pandas ``to_markdown``): **bold** best, † not different from it."""
    cells = table.cells.copy()
    for j in range(cells.shape[1]):
        col = cells.iloc[:, j].tolist()
        b, m = table.bold.iloc[:, j].tolist(), table.marked.iloc[:, j].tolist()
        cells.iloc[:, j] = [f"**{t}**" if bb else (f"{t} †" if mm else t) for t, bb, mm in zip(col, b, m)]
    cells.columns = pd.Index(table.flat_columns())
    cells.index = pd.Index([f"*{i}*" if i == FLOOR else str(i) for i in cells.index], name=table.row_name)
    align = ("left",) + ("right",) * cells.shape[1]
    return cells.to_markdown(tablefmt="pipe", colalign=align)


def failures_markdown(failures: Sequence[Failure]) -> list[str]:
    """A "Failed" section: one line per fit or cell that raised or could not run."""
    if not failures:
        return []
    return ["## Failed", "", *[f"- {f.line()}" for f in failures], "",
            "Rerun the same command to retry only these (finished fits and cells come from the cache).", ""]


def leaderboard_markdown(records: Sequence[ResultRecord | Mapping[str, Any]], title: str = "uadbench leaderboard",
                         failures: Sequence[Failure] = (), *, per_spec: bool = False, tables: Sequence[Table] | None = None) -> str:
    """Every table of ``records`` as Markdown, each with its caption and spec hash; then failures."""
    tables = list(tables) if tables is not None else (tables_for(records, per_spec=per_spec) if records else [])
    lines = [f"# {title}", ""]
    for table in tables:
        lines += [f"## {table.title}", "", f"Benchmark version (spec hash) `{table.spec_hash}`.", "", table_markdown(table), "",
                  table.caption, ""]
    if not tables:
        lines += ["No result records.", ""]
    lines += failures_markdown(failures)
    return "\n".join(lines)
