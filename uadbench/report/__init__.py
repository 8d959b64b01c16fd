"""Result records -> leaderboard tables, figures and a published edition (no torch, no MLflow).

- :mod:`uadbench.report.tables`: records -> a tidy pandas frame (:func:`tidy_frame`) -> tables in
  Markdown, LaTeX, HTML, CSV and plain text;
- :mod:`uadbench.report.figures`: seaborn figures from the same frame and the cells' example volumes;
- :mod:`uadbench.report.publish`: tables, figures, grid, records and environment into one folder.

``figures`` and ``publish`` (matplotlib, seaborn) are imported on first use, so
``import uadbench.report`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from uadbench.records import read_records
from uadbench.report.tables import (
    Table,
    failures_markdown,
    leaderboard_csv,
    leaderboard_html,
    leaderboard_latex,
    leaderboard_markdown,
    leaderboard_terminal,
    summarise,
    summarise_frame,
    tables_for,
    tidy_frame,
)

__all__ = [
    "Table",
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
    "tables_for",
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
