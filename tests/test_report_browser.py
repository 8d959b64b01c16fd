"""The HTML leaderboard in a real browser: headless Chromium renders the tables, bold best cells,
and sorts rows when a column header is clicked (the floor stays last)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_report import make_records

from uadbench import report

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)

# runs after the page's own script: reads the rendered table, clicks the AUPRC header twice
PROBE = """
<script>
(function () {
  var table = document.querySelector("table.uadbench");
  function order() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent.trim(); }); }
  function cell(label, col) {
    var row = Array.prototype.find.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent.trim() === label; });
    var td = row.querySelector("td.col" + col);
    return {text: td.textContent.trim(), weight: getComputedStyle(td).fontWeight};
  }
  var header = table.querySelector("thead tr:last-child th.col_heading.col0");
  var out = {header: header.textContent.trim(), initial: order(), best: cell("b_x", 0), other: cell("c", 0),
             floor: cell("floor", 0), floorStyle: getComputedStyle(table.tBodies[0].rows[3].cells[0]).fontStyle};
  header.click();
  out.first = order(); out.firstSort = header.getAttribute("aria-sort");
  header.click();
  out.second = order(); out.secondSort = header.getAttribute("aria-sort");
  var rank = table.querySelector("thead tr:last-child th.col_heading.col" + (table.tBodies[0].rows[0].cells.length - 2));
  rank.click();
  out.rank = order(); out.rankHeader = rank.textContent.trim();
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if CHROMIUM is None:
        print("\nskipped: no chromium on PATH (Debian: apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    page = report.leaderboard_html(make_records(), title="browser test")
    path = tmp_path_factory.mktemp("html") / "leaderboard.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                           "--user-data-dir=" + str(path.parent / "profile"), "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the probe script did not run: " + proc.stdout[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")), proc.stdout


def test_chromium_renders_the_cells_with_the_best_in_bold(rendered):
    probe, dom = rendered
    assert probe["header"] == "AUPRC ↑"
    assert probe["initial"] == ["a", "b_x", "c", "floor"]
    assert probe["best"]["text"].startswith("60.00 ± 0.71 [") and int(probe["best"]["weight"]) >= 700
    assert probe["other"]["text"].startswith("23.17 ± 0.71 [") and int(probe["other"]["weight"]) < 700
    assert probe["floor"]["text"].startswith("4.83") and probe["floorStyle"] == "italic"
    assert dom.count('class="uadbench"') == 2  # the leaderboard and the shift table


def test_a_click_on_a_header_sorts_best_first_then_reverses_and_the_floor_stays_last(rendered):
    probe, _ = rendered
    assert probe["first"] == ["b_x", "a", "c", "floor"] and probe["firstSort"] == "descending"  # AUPRC: higher is better
    assert probe["second"] == ["c", "a", "b_x", "floor"] and probe["secondSort"] == "ascending"
    assert probe["rankHeader"] == "Mean rank" and probe["rank"] == ["b_x", "a", "c", "floor"]  # lower rank first
