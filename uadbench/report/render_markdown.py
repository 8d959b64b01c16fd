"""Tables as Markdown: pipe tables through pandas ``to_markdown`` (tabulate), each with its caption.

Text that comes from records or grid files (labels, dataset and shift names, titles, notes, error
lines) goes through :func:`markdown_text`, so that it shows as written wherever the Markdown is
rendered (mkdocs, Jupyter, GitHub): ``<img onerror=...>`` stays text, not a tag, and ``[x](url)``
is not a link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from uadbench.records import Failure, ResultRecord
from uadbench.report.build import Table, tables_for
from uadbench.report.frame import FLOOR

__all__ = ["failures_markdown", "leaderboard_markdown", "markdown_text", "table_markdown"]

_LINE_BREAK = re.compile(r"[ \t]*[\r\n]+[ \t]*")


def markdown_text(text: object, *, inline: bool = True, cell: bool = False) -> str:
    r"""Plain text as Markdown that shows it as written: ``&`` and ``<`` as HTML entities (no tag,
    entity or autolink can start), ``](`` as ``]\(`` (no link or image); ``inline``: line breaks as
    one space (a title or a list item cannot start a new block); ``cell``: also ``|`` as ``\|`` (a
    table cell cannot end early). Ordinary text (letters, digits, brackets, ``->``) is unchanged."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;")
    out = out.replace("](", "]\\(")  # "](" ends a link's or an image's text and opens its target
    if inline or cell:
        out = _LINE_BREAK.sub(" ", out)
    if cell:
        out = out.replace("|", "\\|")
    return out


def table_markdown(table: Table) -> str:
    """``table`` as a pipe table (pandas ``to_markdown``): **bold** best, † not different from it."""
    cells = table.cells.copy()
    for j in range(cells.shape[1]):
        col = [markdown_text(t, cell=True) if isinstance(t, str) else t for t in cells.iloc[:, j].tolist()]
        b, m = table.bold.iloc[:, j].tolist(), table.marked.iloc[:, j].tolist()
        cells.iloc[:, j] = [f"**{t}**" if bb else (f"{t} †" if mm else t) for t, bb, mm in zip(col, b, m)]
    cells.columns = pd.Index([markdown_text(c, cell=True) for c in table.flat_columns()])
    cells.index = pd.Index([f"*{i}*" if i == FLOOR else markdown_text(i, cell=True) for i in cells.index],
                           name=markdown_text(table.row_name, cell=True))
    align = ("left",) + ("right",) * cells.shape[1]
    return cells.to_markdown(tablefmt="pipe", colalign=align)


def failures_markdown(failures: Sequence[Failure]) -> list[str]:
    """A "Failed" section: one line per fit or cell that raised or could not run."""
    if not failures:
        return []
    return ["## Failed", "", *[f"- {markdown_text(f.line())}" for f in failures], "",
            "Rerun the same command to retry only these (finished fits and cells come from the cache).", ""]


def leaderboard_markdown(records: Sequence[ResultRecord | Mapping[str, Any]], title: str = "uadbench leaderboard",
                         failures: Sequence[Failure] = (), *, per_spec: bool = False, tables: Sequence[Table] | None = None) -> str:
    """Every table of ``records`` as Markdown, each with its caption and spec hash; then failures."""
    tables = list(tables) if tables is not None else (tables_for(records, per_spec=per_spec) if records else [])
    lines = [f"# {markdown_text(title)}", ""]
    for table in tables:
        lines += [f"## {markdown_text(table.title)}", "", f"Benchmark version (spec hash) `{markdown_text(table.spec_hash)}`.", "",
                  table_markdown(table), "", markdown_text(table.caption), ""]
    if not tables:
        lines += ["No result records.", ""]
    lines += failures_markdown(failures)
    return "\n".join(lines)
