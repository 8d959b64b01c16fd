"""Cache entries carry their sha256: a corrupt fit, map or cell is set aside in one line and
recomputed, the run goes on to the same numbers, and entries from before digests stay readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uadbench.checkpoints import Checkpointer
from uadbench.files import digest_path, entry_intact, read_entry, record_digest, sha256_file
from uadbench.grid import load_grid
from uadbench.run import layout

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke.toml"


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _numbers(path: Path) -> list[tuple]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["eval_key"], r["metrics"], r["per_volume"], r["thresholds"], r["floor"]) for r in rows]


def test_read_entry_checks_the_digest_and_trusts_an_old_entry_once(tmp_path):
    reports: list[str] = []
    entry = tmp_path / "cell.json"
    entry.write_text('{"a": 1}')
    read = lambda p: json.loads(p.read_text())  # noqa: E731
    # written before digests: trusted once if it reads, and its digest recorded then
    assert read_entry(entry, read, what="cell record", report=reports.append) == {"a": 1}
    assert digest_path(entry).read_text().split()[0] == sha256_file(entry) and not reports
    # a byte changed after that, still valid JSON: caught by the digest alone
    entry.write_text('{"a": 2}')
    assert read_entry(entry, read, what="cell record", report=reports.append) is None
    (line,) = reports
    assert line.startswith(f"uadbench: cell record {entry} is corrupt: its sha256 ") and "moved aside to cell.json.corrupt" in line
    assert (tmp_path / "cell.json.corrupt").read_text() == '{"a": 2}' and not entry.exists() and not digest_path(entry).exists()
    # an old entry (no digest) that does not read: set aside too
    entry.write_text("")
    assert read_entry(entry, read, what="cell record", report=reports.append) is None
    assert "does not read (JSONDecodeError" in reports[1] and "\n" not in reports[1]
    # an entry whose digest matches is never set aside: an error reading it is raised
    entry.write_text("[")
    record_digest(entry)
    with pytest.raises(json.JSONDecodeError):
        read_entry(entry, read, what="cell record", report=reports.append)
    assert entry.exists() and len(reports) == 2
    assert read_entry(tmp_path / "missing.json", read, what="cell record", report=reports.append) is None
    # a check that reads an entry only when it has no digest (a large checkpoint is hashed, not loaded)
    calls: list[Path] = []
    fit = tmp_path / "model.pt"
    fit.write_bytes(b"weights")
    assert entry_intact(fit, calls.append, what="fit checkpoint", report=reports.append) and calls == [fit]  # trusted once
    assert entry_intact(fit, calls.append, what="fit checkpoint", report=reports.append) and calls == [fit]  # hashed only
    fit.write_bytes(b"weighty")
    assert not entry_intact(fit, calls.append, what="fit checkpoint", report=reports.append) and calls == [fit]
    assert "fit checkpoint" in reports[-1] and (tmp_path / "model.pt.corrupt").read_bytes() == b"weighty"


def test_a_corrupt_training_checkpoint_is_set_aside_and_its_loop_starts_again(tmp_path, capsys):
    ckpt = Checkpointer(tmp_path / "work")
    ckpt.save("loop", {"step": 3, "weights": torch.arange(1000.0)})
    assert digest_path(ckpt.path("loop")).is_file()
    assert ckpt.load("loop")["step"] == 3
    _flip(ckpt.path("loop"), at=ckpt.path("loop").stat().st_size - 40)
    assert ckpt.load("loop") is None
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"training checkpoint {ckpt.path('loop')} is corrupt" in err
    assert ckpt.path("loop").with_name("loop.pt.corrupt").is_file()


def test_corrupt_fit_map_and_cell_entries_are_recomputed_to_the_same_records(tmp_path, data_root, capsys):
    """A finished smoke run; then the ae fit's checkpoint cut to 0 bytes, a byte flipped in a cell
    record and in the maps that cell reads: the rerun names each in one line, keeps each as
    ``.corrupt``, recomputes them and writes the same numbers."""
    from uadbench.cli import main

    out = tmp_path / "run"
    args = ["run", str(SMOKE), "--out", str(out), "--no-tracking"]
    assert main(args) == 0
    capsys.readouterr()
    before = _numbers(out / "results.jsonl")
    cache = layout.default_cache(out)
    spec = load_grid(SMOKE)
    fits = spec.fit_jobs(runtime={"threads": 1, "device": "cpu"})
    evals = spec.eval_jobs(fits)
    assert sorted(e.key for e in evals) == sorted(key for key, *_ in before)  # the keys the run used
    for fit in fits:
        for entry in (layout.model_path(cache, fit.key), layout.meta_path(cache, fit.key)):
            assert digest_path(entry).read_text().split()[0] == sha256_file(entry)
    for job in evals:
        assert digest_path(layout.eval_path(cache, job.key)).is_file()
        assert all(digest_path(layout.map_path(cache, ref.key)).is_file() for ref in job.maps)

    ae = next(f for f in fits if f.method.name == "ae")
    cell = next(e for e in evals if e.fit.method.name == "thresh" and e.shift.name != "none")
    model, record, maps = layout.model_path(cache, ae.key), layout.eval_path(cache, cell.key), layout.map_path(cache, cell.map("test").key)
    model.write_bytes(b"")  # what a crash of an unsynced write leaves
    _flip(record, at=record.read_text().index('"metrics"') + 20)
    _flip(maps)

    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "is corrupt" in line]
    assert len(lines) == 3, err
    for path, what in ((model, "fit checkpoint"), (record, "cell record"), (maps, "anomaly maps")):
        (line,) = [line for line in lines if str(path) in line]
        assert line.startswith(f"uadbench: {what} {path} is corrupt: ") and f"moved aside to {path.name}.corrupt" in line
        assert path.with_name(path.name + ".corrupt").is_file()
        assert digest_path(path).read_text().split()[0] == sha256_file(path)  # recomputed, with a new digest
    assert model.with_name("model.pt.corrupt").stat().st_size == 0
    assert _numbers(out / "results.jsonl") == before


def test_entries_written_before_digests_are_trusted_once_then_checked(tmp_path, data_root, capsys):
    from uadbench.cli import main

    out = tmp_path / "run"
    args = ["run", str(SMOKE), "--out", str(out), "--no-tracking"]
    assert main(args) == 0
    before = _numbers(out / "results.jsonl")
    digests = sorted(layout.default_cache(out).rglob("*.sha256"))
    recorded = {p: p.read_text() for p in digests}
    for p in digests:
        p.unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "corrupt" not in capsys.readouterr().err
    assert _numbers(out / "results.jsonl") == before
    # every entry the rerun read has its digest again, the same as the one written with it
    again = {p: p.read_text() for p in layout.default_cache(out).rglob("*.sha256")}
    assert again and all(recorded[p] == text for p, text in again.items())
    fits = layout.fits_root(layout.default_cache(out))
    assert {p for p in again if p.is_relative_to(fits)} == {p for p in recorded if p.is_relative_to(fits)}
