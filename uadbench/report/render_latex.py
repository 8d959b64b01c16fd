"""Tables as LaTeX: ``Styler.to_latex`` with booktabs rules, escaped text and the tables' symbols as math."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from uadbench.records import ResultRecord
from uadbench.report.build import Table, tables_for

__all__ = ["latex_text", "leaderboard_latex", "table_latex"]

_LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "→": r"$\rightarrow$",
                  "–": "--", "α": r"$\alpha$", "·": r"$\cdot$", "×": r"$\times$", "≥": r"$\geq$"}


def latex_text(text: str) -> str:
    """Plain text -> LaTeX: the special characters ``\\ { } $ & # ^ _ % ~`` escaped, the symbols the
    tables use as math, line breaks as spaces (a blank line would end a caption's paragraph)."""
    out = []
    for ch in " ".join(str(text).splitlines()):
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append(r"\textasciitilde{}")
        elif ch == "^":
            out.append(r"\textasciicircum{}")
        elif ch == "\\":
            out.append(r"\textbackslash{}")
        else:
            out.append(_LATEX_SYMBOLS.get(ch, ch))
    return "".join(out)


def _unicode_to_latex(text: str) -> str:
    for a, b in _LATEX_SYMBOLS.items():
        text = text.replace(a, b)
    return text


def table_latex(table: Table, label: str | None = None) -> str:
    """``table`` through ``Styler.to_latex``: booktabs rules, escaped headers and cells, grouped
    columns as \\multicolumn, best in \\textbf, † as a superscript dagger; needs ``booktabs``."""
    cells = table.daggered()
    styler = cells.style
    styler = styler.format(_unicode_to_latex, escape="latex")
    styler = styler.format_index(_unicode_to_latex, escape="latex", axis=0)
    styler = styler.format_index(_unicode_to_latex, escape="latex", axis=1)
    bold = table.bold.set_axis(cells.columns, axis=1).set_axis(cells.index, axis=0)
    styler = styler.apply(lambda _: np.where(bold.to_numpy(), "textbf:--rwrap;", ""), axis=None)
    align = "l" + "".join("r" if b != 0 or not isinstance(cells.iloc[0, j], str) or cells.iloc[:, j].str.match(r"^[–\d\-+]").all()
                          else "l" for j, b in enumerate(table.better))
    if table.one_group():
        styler = styler.hide(axis="columns", level=0)
    caption = latex_text(table.caption)
    return styler.to_latex(hrules=True, column_format=align, multicol_align="c", caption=caption, position="t", position_float="centering",
                           label=label or f"tab:{table.slug}", environment="table")


def leaderboard_latex(records: Sequence[ResultRecord | Mapping[str, Any]], *, per_spec: bool = False,
                      tables: Sequence[Table] | None = None) -> str:
    """Every table as a LaTeX ``table`` float (booktabs; needs ``\\usepackage{booktabs}``)."""
    tables = list(tables) if tables is not None else tables_for(records, per_spec=per_spec)
    return "\n".join(f"% {_comment(t.title)} (spec hash {_comment(t.spec_hash)})\n" + table_latex(t) for t in tables)


def _comment(text: str) -> str:
    """Text for a ``%`` comment line: one line, so that nothing after it leaves the comment."""
    return " ".join(str(text).splitlines())
