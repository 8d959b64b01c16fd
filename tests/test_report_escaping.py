"""Free text in Markdown and LaTeX editions shows as written: no tag, link, table cell or LaTeX
command can come from a label, a dataset name, a grid's notes or a caption."""

from __future__ import annotations

import dataclasses
import re

import pytest
from test_report import make_records

from uadbench.records import records_text
from uadbench.report.render_latex import latex_text, leaderboard_latex
from uadbench.report.render_markdown import leaderboard_markdown, markdown_text

HOSTILE = "<img src=x onerror=alert(1)>|[x](javascript:alert(1)) & a_b$c#d^e%f~g{h}i\\j"


def _hostile_records():
    return [dataclasses.replace(r, label=HOSTILE, grid="g\n\\input{/etc/passwd}\n\n# heading") if r.label == "a" else r
            for r in make_records()]


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


@pytest.mark.parametrize("text", ["ae[steps=1500]", "gamma@1.5", "36 -> 68 AUPRC", "52.25 [43.4, 61.0]", "Dice@val-bisection ↑",
                                  "*floor*", "`0123abcd4567`", "fp_volume_ml (ml)"])
def test_ordinary_text_is_unchanged(text):
    assert markdown_text(text) == text and markdown_text(text, cell=True) == text


def test_a_hostile_label_renders_as_text_in_markdown():
    md = leaderboard_markdown(_hostile_records())
    assert "<" not in md  # no tag of any kind
    assert "&lt;img src=x onerror=alert(1)>\\|[x]\\(javascript:alert(1)) &amp; a_b$c#d^e%f~g{h}i\\j" in md
    assert "](" not in md  # no link or image
    for table in md.split("\n\n"):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len({_unescaped_pipes(line) for line in rows}) <= 1, "a cell ended early"
    titles = [line for line in md.splitlines() if line.startswith("#")]
    assert all(line.startswith(("# uadbench", "## g \\input{/etc/passwd} # heading:")) for line in titles), titles


def test_a_hostile_label_and_grid_are_escaped_in_latex():
    tex = leaderboard_latex(_hostile_records())
    escaped = (r"<img src=x onerror=alert(1)>|[x](javascript:alert(1)) \& a\_b\$c\#d\textasciicircum e\%f\textasciitilde g\{h\}i"
               r"\textbackslash j")
    row = next(line for line in tex.splitlines() if line.startswith("<img"))
    assert row.startswith(escaped + " & ")  # the label cell, then the next column
    assert latex_text(HOSTILE) == escaped.replace(r"\textasciicircum ", r"\textasciicircum{}").replace(
        r"\textasciitilde ", r"\textasciitilde{}").replace(r"\textbackslash ", r"\textbackslash{}")
    comments = [line for line in tex.splitlines() if line.startswith("%")]
    assert comments and all("\\input" in line for line in comments)  # the grid's name stays inside its comment line
    assert "\n\\input" not in tex and "\n\n" not in tex.split("\\caption{", 1)[1].split("\\label", 1)[0]


def test_hostile_notes_in_a_grid_render_as_text_in_the_published_readme(tmp_path):
    from uadbench.report.publish import publish

    records = make_records(seeds=(0,))
    results = tmp_path / "results.jsonl"
    results.write_text(records_text(records))
    grid = tmp_path / "g.toml"
    grid.write_text('name = "g"\nnotes = """\nSee <img src=x onerror=alert(1)> and [this](javascript:alert(1)) & more.\n'
                    'Scores go 36 -> 68.\n"""\n')
    edition = tmp_path / "edition"
    publish(results, edition, grid=grid, title="<script>alert(1)</script>", formats=("png",), command="uadbench leaderboard ```x```")
    readme = (edition / "README.md").read_text()
    assert "<" not in readme and "](javascript" not in readme
    assert "See &lt;img src=x onerror=alert(1)> and [this]\\(javascript:alert(1)) &amp; more.\nScores go 36 -> 68." in readme
    assert readme.startswith("# &lt;script>alert(1)&lt;/script>\n")
    assert "````bash\nuadbench run g.toml --out RUN_DIR\nuadbench leaderboard ```x```\n````\n" in readme.replace(str(tmp_path) + "/", "")
