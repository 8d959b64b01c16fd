"""Result records -> leaderboard tables, figures and a published edition (no torch, no MLflow).

Records -> a tidy pandas frame -> a summary -> tables -> one renderer per format:

- :mod:`~uadbench.report.frame`: records -> the tidy frame (:func:`tidy_frame`), a row per cell ×
  metric and per cell × subject × metric;
- :mod:`~uadbench.report.statistics`: the frame reduced once (:func:`summarise_frame`): means and
  stds over seeds, bootstrap intervals, the "not different from the best" test, ranks;
- :mod:`~uadbench.report.build`: the summary laid out as tables (:class:`Table`);
- ``render_markdown``, ``render_latex``, ``render_html``, ``render_csv``, ``render_text``: the
  tables as Markdown, LaTeX (booktabs), one HTML page, CSV and plain text for the terminal;
- :mod:`~uadbench.report.figures`: seaborn figures from the same frame and the cells' example volumes;
- :mod:`~uadbench.report.publish`: tables, figures, grid, records and environment into one folder.

``figures`` and ``publish`` (matplotlib, seaborn) are imported on first use, so
``import uadbench.report`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from uadbench.records import read_records
from uadbench.report.build import Table, tables_for, tables_from_summary
from uadbench.report.frame import check_one_spec, tidy_frame
from uadbench.report.render_csv import leaderboard_csv, summary_csv
from uadbench.report.render_html import leaderboard_html
from uadbench.report.render_latex import leaderboard_latex
from uadbench.report.render_markdown import failures_markdown, leaderboard_markdown, table_markdown
from uadbench.report.render_text import leaderboard_terminal
from uadbench.report.statistics import Summary, summarise, summarise_frame

__all__ = [
    "Summary",
    "Table",
    "check_one_spec",
    "failures_markdown",
    "figures",
    "leaderboard_csv",
    "leaderboard_html",
    "leaderboard_latex",
    "leaderboard_markdown",
    "leaderboard_terminal",
    "publish",
    "read_records",
    "summarise",
    "summarise_frame",
    "summary_csv",
    "table_markdown",
    "tables_for",
    "tables_from_summary",
    "tidy_frame",
]


def __getattr__(name: str) -> Any:
    if name in ("figures", "publish"):
        module = importlib.import_module(f"uadbench.report.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'uadbench.report' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from uadbench.report import figures, publish
