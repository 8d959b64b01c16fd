"""Tables as one self-contained HTML page: ``Styler.to_html``, an inline style and a small sort script."""

from __future__ import annotations

import html as _html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from uadbench.records import ResultRecord
from uadbench.report.build import Table, tables_for
from uadbench.report.frame import FLOOR

__all__ = ["leaderboard_html", "table_html"]

_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
table.uadbench { border-collapse: collapse; margin: 1em 0 0.4em 0; font-size: 0.85em; }
table.uadbench th, table.uadbench td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
table.uadbench thead th { border-bottom: 2px solid #555; }
table.uadbench thead tr:last-child th.col_heading { cursor: pointer; }
table.uadbench thead th[aria-sort=ascending]::after { content: " ▲"; }
table.uadbench thead th[aria-sort=descending]::after { content: " ▼"; }
table.uadbench th.row_heading { text-align: left; }
table.uadbench thead tr:not(:last-child) th.col_heading { text-align: center; border-bottom: 1px solid #999; }
table.uadbench tr.floor th, table.uadbench tr.floor td { color: #666; font-style: italic; }
caption { caption-side: bottom; text-align: left; max-width: 70em; color: #444; font-size: 0.9em; padding-top: 0.4em; }
p.spec { color: #666; font-size: 0.85em; }
"""

_HTML_SCRIPT = """
(function () {
  var keys = JSON.parse(document.getElementById("uadbench-sort-keys").textContent);
  document.querySelectorAll("table.uadbench").forEach(function (table) {
    var meta = keys[table.id]; if (!meta) return;
    var body = table.tBodies[0];
    Array.prototype.forEach.call(body.rows, function (row, i) { row.dataset.row = i; if (meta.pinned[i]) row.classList.add("floor"); });
    var heads = table.querySelectorAll("thead tr:last-child th.col_heading");
    heads.forEach(function (th) {
      var m = th.className.match(/\\bcol(\\d+)\\b/); if (!m) return;
      var col = +m[1];
      th.title = "sort";
      th.addEventListener("click", function () {
        var first = meta.better[col] >= 0 ? (meta.better[col] > 0 ? "descending" : "ascending") : "ascending";
        var now = th.getAttribute("aria-sort");
        var order = now ? (now === "ascending" ? "descending" : "ascending") : first;
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", order);
        var sign = order === "ascending" ? 1 : -1;
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var ia = +a.dataset.row, ib = +b.dataset.row;
          if (meta.pinned[ia] !== meta.pinned[ib]) return meta.pinned[ia] ? 1 : -1;
          var ka = meta.keys[ia][col], kb = meta.keys[ib][col];
          if (ka === null && kb === null) return ia - ib;
          if (ka === null) return 1;
          if (kb === null) return -1;
          if (ka < kb) return -sign;
          if (ka > kb) return sign;
          return ia - ib;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def table_html(table: Table, table_id: str) -> str:
    """``table`` through ``Styler.to_html``: escaped cells, best in bold, a caption, id ``table_id``."""
    cells = table.daggered()
    styler = cells.style.format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    bold = table.bold.to_numpy()
    styler = styler.apply(lambda _: np.where(bold, "font-weight: bold;", ""), axis=None)
    if table.one_group():
        styler = styler.hide(axis="columns", level=0)
    styler = styler.set_caption(_html.escape(table.caption)).set_table_attributes('class="uadbench"')
    return styler.to_html(table_uuid=table_id, exclude_styles=False).replace(f'id="T_{table_id}"', f'id="{table_id}"', 1)


def _json_key(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    f = float(v)
    return f if math.isfinite(f) else None


def leaderboard_html(records: Sequence[ResultRecord | Mapping[str, Any]], title: str = "uadbench leaderboard", *, per_spec: bool = False,
                     tables: Sequence[Table] | None = None) -> str:
    """A self-contained HTML page (no external resource) of every table; a click on a column
    header sorts the rows (best first, again to reverse); the floor stays last."""
    tables = list(tables) if tables is not None else tables_for(records, per_spec=per_spec)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{_html.escape(title)}</title>\n"
             f"<style>{_HTML_STYLE}</style>\n</head>\n<body>\n<h1>{_html.escape(title)}</h1>"]
    sort_meta = {}
    for i, table in enumerate(tables):
        table_id = f"t{i}-{table.slug}"
        parts.append(f"<h2>{_html.escape(table.title)}</h2>")
        parts.append(f'<p class="spec">benchmark version (spec hash) <code>{_html.escape(table.spec_hash)}</code></p>')
        parts.append(table_html(table, table_id))
        sort_meta[table_id] = {
            "keys": [[_json_key(v) for v in row] for row in table.keys.itertuples(index=False)],
            "better": table.better,
            "pinned": [str(i) == FLOOR for i in table.cells.index],
        }
    blob = json.dumps(sort_meta).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="uadbench-sort-keys">{blob}</script>')
    parts.append(f"<script>{_HTML_SCRIPT}</script>\n</body>\n</html>\n")
    return "\n".join(parts)
