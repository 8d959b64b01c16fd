"""--publish on shared files: a hostile results file, a folder that is not an edition, its own input."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_report import make_records

from uadbench.errors import ConfigError, UadbenchError
from uadbench.records import records_text
from uadbench.report.publish import EDITION_MARKER, publish


def _results(tmp_path, records):
    path = tmp_path / "results.jsonl"
    path.write_text(records_text(records))
    return path


@pytest.mark.parametrize("field, value", [("dataset", "../../escape"), ("label", "floor"), ("label", "<img src=x onerror=alert(1)>"),
                                          ("grid", "../../../etc/passwd"), ("shift", "a/b")])
def test_a_hostile_results_file_is_refused_before_anything_is_written(tmp_path, field, value):
    records = [dataclasses.replace(r, **{field: value}) for r in make_records(seeds=(0,))]
    with pytest.raises(UadbenchError, match=rf"has {field} |names grid "):
        publish(_results(tmp_path, records), tmp_path / "edition")
    assert not (tmp_path / "edition").exists() and not list(tmp_path.parent.glob("escape*"))


def test_publish_writes_only_into_an_empty_folder_or_an_earlier_edition(tmp_path):
    results = _results(tmp_path, make_records(seeds=(0,)))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("my project")
    with pytest.raises(UadbenchError, match="not a uadbench edition"):
        publish(results, repo)
    assert (repo / "README.md").read_text() == "my project" and len(list(repo.iterdir())) == 1
    edition = tmp_path / "edition"
    publish(results, edition)
    assert (edition / EDITION_MARKER).is_file()
    env = json.loads((edition / "environment.json").read_text())
    env["verify"] = {"tolerance": 0.002}
    (edition / "environment.json").write_text(json.dumps(env))
    publish(results, edition)  # an earlier edition is replaced, and its declared tolerance kept
    assert json.loads((edition / "environment.json").read_text())["verify"] == {"tolerance": 0.002}


def test_publish_never_deletes_its_input(tmp_path, monkeypatch):
    from uadbench.report import publish as pub

    edition = tmp_path / "edition"
    publish(_results(tmp_path, make_records(seeds=(0,))), edition)
    results = edition / "results.jsonl"  # re-rendering an edition in place, from its own records
    monkeypatch.setattr(pub, "RECORDS_GZIP_BYTES", 10)  # they will be gzipped, and the plain file would go
    publish(results, edition)
    assert results.is_file() and (edition / "results.jsonl.gz").is_file()


def test_grid_labels_are_plain_and_floor_is_reserved():
    from uadbench.grid import parse_grid

    base = {"name": "g", "image_grid": "smoke", "train_dataset": "phantom-healthy-t2w", "datasets": [{"name": "phantom-tumour-t2w"}]}
    for label in ("floor", "../x", "<b>", "a b"):
        with pytest.raises(ConfigError, match="label .* is not allowed"):
            parse_grid({**base, "methods": [{"name": "ae", "preset": "smoke", "label": label}]})
    assert parse_grid({**base, "methods": [{"name": "ae", "preset": "smoke", "label": "ae-small_2.0"}]}).methods[0].display == "ae-small_2.0"
