"""The command line: listings, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from uadbench.cli import main

GOOD = """
name = "bad"
image_grid = "smoke"
train_dataset = "phantom-healthy-t2w"
[[methods]]
name = "thresh"
preset = "smoke"
[[datasets]]
name = "phantom-tumour-t2w"
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    return subprocess.run(
        [sys.executable, "-m", "uadbench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_list_methods_with_wildcard(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "thresh" in out and "ae" in out
    lines = {line.split()[0]: line for line in out.strip().splitlines()}
    assert len(lines["thresh"].split(None, 1)) == 2  # a description follows the name
    assert main(["list", "methods", "th*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == ["thor", "thresh"]


@pytest.mark.parametrize("kind", ["datasets", "shifts", "metrics"])
def test_list_other_registries(kind, capsys):
    assert main(["list", kind]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('name = "thresh"', 'name = "thrash"'), "unknown method 'thrash'; did you mean 'thresh'"),
        (lambda s: s.replace('name = "phantom-tumour-t2w"', 'name = "brats"'), "unknown dataset 'brats'"),
        (lambda s: s.replace('preset = "smoke"', 'preset = "smoke"\noverrides = { nope = 1 }'), "unknown config key 'nope'.*valid keys: invert"),
        (lambda s: s.replace('image_grid = "smoke"', 'image_grid = "smoke"\nepochs = 3'), "unknown key 'epochs'"),
        (lambda s: s + "[[shifts]]\nname = 'gama'\nseverities = [1.5]\n", "unknown shift 'gama'; did you mean 'gamma'"),
        (lambda s: s.replace("[[datasets]]", "[[datasets\n"), "not valid TOML"),
    ],
)
def test_bad_grid_is_one_line_exit_2_nothing_written(tmp_path, edit, message):
    grid = tmp_path / "bad.toml"
    grid.write_text(edit(GOOD))
    out = tmp_path / "run"
    proc = run_cli("run", str(grid), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("uadbench: error: ")
    import re

    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())


def test_missing_grid_file(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"uadbench: error: grid file not found: {tmp_path / 'nope.toml'}"


def test_unknown_subcommand_and_kind():
    proc = run_cli("list", "widgets")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'widgets'" in proc.stderr


def test_report_missing_file(tmp_path):
    proc = run_cli("report", str(tmp_path / "results.jsonl"))
    assert proc.returncode == 2 and "results file not found" in proc.stderr


def test_phantom_preview_writes_a_png(tmp_path):
    out = tmp_path / "preview.png"
    proc = run_cli("phantom", "--preview", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phantom_needs_an_output(tmp_path):
    proc = run_cli("phantom", cwd=tmp_path)
    assert proc.returncode == 2 and "needs --out DIR and/or --preview" in proc.stderr


# -- every error path: exit 2, one line on stderr, no traceback, nothing created or changed ------
def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (folders and links by kind)."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link:{os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A scratch cwd with a valid grid; the default data root points inside it (and must stay absent)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UADBENCH_DATA", str(tmp_path / "data"))
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / "file.txt").write_text("not a folder")
    return tmp_path


@pytest.fixture
def cli_error(work, capsys):
    """Run ``uadbench ARGS`` in-process; check exit 2, one stderr line, no change under the cwd; return the line."""

    def run(*args: str) -> str:
        capsys.readouterr()
        before = snapshot(work)
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(("uadbench: error: ", "uadbench run: error: ", "uadbench compare: error: ",
                                    "uadbench phantom: error: ", "uadbench ui: error: ")), lines[0]
        assert snapshot(work) == before
        return lines[0]

    return run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], r"argument --threads: must be an integer >= 1, got 0$"),
        (["--workers", "0"], r"argument --workers: must be an integer >= 1, got 0$"),
        (["--workers", "two"], r"argument --workers: must be an integer >= 1, got 'two'$"),
        (["--out", "file.txt"], r"--out file.txt is a file, not a directory$"),
        (["--out", "file.txt/run"], r"--out file.txt/run cannot be created: .*file.txt is a file, not a directory$"),
        (["--out", "run", "--cache", "file.txt"], r"--cache file.txt is a file, not a directory$"),
        (["--out", "run", "--data-root", "file.txt/data"], r"--data-root file.txt/data cannot be created: .*file.txt is a file"),
    ],
)
def test_run_bad_option_or_path(cli_error, args, message):
    import re

    assert re.search(message, cli_error("run", "good.toml", *args))


def test_run_data_root_from_the_environment_is_a_file(cli_error, monkeypatch, work):
    monkeypatch.setenv("UADBENCH_DATA", str(work / "file.txt"))
    assert cli_error("run", "good.toml", "--out", "run").endswith(f"$UADBENCH_DATA {work / 'file.txt'} is a file, not a directory")


def test_run_default_cache_inside_the_run_dir_is_a_file(cli_error, work):
    (work / "run").mkdir()
    (work / "run" / "cache").write_text("x")
    assert cli_error("run", "good.toml", "--out", "run").endswith("cache directory run/cache is a file, not a directory")


def test_run_unwritable_or_read_only_out(cli_error, monkeypatch, work):
    """(Simulated: the tests may run as root, who writes anywhere.)"""
    real_access = os.access
    locked = work / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    assert cli_error("run", "good.toml", "--out", "locked/run").endswith(f"--out locked/run cannot be created: {locked} is not writable by this user")

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly())
    assert cli_error("run", "good.toml", "--out", "locked").endswith("--out locked is on a read-only file system")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_run_cuda_without_a_gpu_is_refused_before_any_work(cli_error, work):
    assert "device 'cuda' requested (--device cuda) but torch sees no CUDA device" in cli_error("run", "good.toml", "--device", "cuda")
    (work / "cuda.toml").write_text(GOOD.replace('image_grid = "smoke"', 'image_grid = "smoke"\ndevice = "cuda"'))
    assert "device 'cuda' requested (device = 'cuda' in cuda.toml)" in cli_error("run", "cuda.toml")
    assert not (work / "runs").exists()


def test_grid_path_is_a_directory_or_a_symlink_loop(cli_error, work):
    (work / "grids").mkdir()
    assert cli_error("run", "grids") == "uadbench: error: grid path grids is a directory; pass a grid TOML file, e.g. leaderboard/quickstart.toml"
    (work / "loop.toml").symlink_to(work / "loop.toml")
    assert cli_error("run", "loop.toml") == "uadbench: error: cannot read grid file loop.toml: a symlink loop"


def test_empty_grid_never_replaces_results(cli_error, work):
    """`methods = []` once ran zero cells and wrote empty results over the old ones."""
    run = work / "run"
    run.mkdir()
    (run / "results.jsonl").write_text('{"schema": 2}\n')
    (run / "leaderboard.md").write_text("# the old leaderboard\n")
    for key in ("methods", "datasets"):
        text = GOOD.split("[[")[0] + f"{key} = []\n" + "".join("[[" + t for t in GOOD.split("[[")[1:] if not t.startswith(key))
        (work / "empty.toml").write_text(text)
        assert f"'{key}' is empty; a grid needs at least one [[{key}]] table" in cli_error("run", "empty.toml", "--out", "run")


def test_bad_grid_value_fails_before_training(cli_error, work):
    (work / "inf.toml").write_text(GOOD + "[[shifts]]\nname = 'gamma'\nseverities = [1.5, inf]\n")
    assert "shift 'gamma': severity must be a finite number > 0, got inf" in cli_error("run", "inf.toml", "--out", "run")


def test_run_errors_through_the_real_command(tmp_path):
    """The same checks in a real process (no traceback, nothing written)."""
    (tmp_path / "good.toml").write_text(GOOD.replace('preset = "smoke"', 'preset = "smoke"\noverrides = { invert = true }'))
    (tmp_path / "bad.toml").write_text(GOOD.replace("[[datasets]]", "[[shifts]]\nname = 'noise'\nseverities = [nan]\n[[datasets]]"))
    before = snapshot(tmp_path)
    for args, message in [
        (["run", "good.toml", "--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
        (["run", "bad.toml"], "shift 'noise': severity must be a finite number >= 0, got nan"),
        (["run", "good.toml", "--out", "good.toml"], "--out good.toml is a file, not a directory"),
    ]:
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before


# -- report and compare --------------------------------------------------------------------------
def _records(path: Path) -> Path:
    from uadbench.records import ResultRecord

    lines = []
    for label, shift, severity in [(m, s, v) for m in ("ae", "thresh") for s, v in (("none", None), ("gamma", 1.5))]:
        record = ResultRecord(
            grid="g", spec_hash="h", method=label, label=label, preset="smoke", config_hash="c", fit_key="f", eval_key=f"{label}{shift}",
            train_dataset="phantom-healthy-t2w", dataset="phantom-tumour-t2w", split="test", val_split="val", shift=shift,
            severity=severity, seed=0, image_grid={"name": "smoke", "shape": [32, 32, 16], "spacing": 6.0},
            metrics={"auprc": 0.5, "auroc": 0.7}, thresholds={}, cost={}, versions={},
            per_volume={f"tumour-test-00{i}": {"auprc": 0.1 * i + (label == "ae") * 0.05, "auroc": 0.6} for i in range(4)},
        )
        lines.append(record.to_json())
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_works_on_a_good_file(work, capsys):
    _records(work / "results.jsonl")
    assert main(["compare", "results.jsonl", "ae", "thresh", "--rounds", "50", "--shift", "gamma@1.5", "--subjects-only"]) == 0
    assert "phantom-tumour-t2w  shift gamma@1.5  seed 0: n=4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["ae", "ae"], "compare needs two different methods, got 'ae' twice"),
        (["ae", "vae"], "no method 'vae' in results.jsonl; methods there: ae, thresh"),
        (["ae", "thresh", "--metric", "dice"], "--metric 'dice' is not in results.jsonl; valid there: auprc, auroc"),
        (["ae", "thresh", "--shift", "gamma@2"], "--shift 'gamma@2' is not in results.jsonl; valid there: gamma@1.5, none"),
        (["ae", "thresh", "--dataset", "brats21"], "--dataset 'brats21' is not in results.jsonl; valid there: phantom-tumour-t2w"),
        (["ae", "thresh", "--rounds", "0"], "argument --rounds: must be an integer in [1, 10000000], got 0"),
    ],
)
def test_compare_bad_choice_lists_the_valid_ones(cli_error, work, args, message):
    _records(work / "results.jsonl")
    assert cli_error("compare", "results.jsonl", *args).endswith(message)


BAD_RESULTS = {
    "empty": ("", r"results.jsonl: no result records \(an empty results file\)$"),
    "truncated": (None, r"results.jsonl:4: not valid JSON"),
    "unknown schema": ('{"schema": 99}\n', r"results.jsonl:1: unknown record schema 99; this uadbench reads schemas"),
    "not an object": ("[1, 2]\n", r"results.jsonl:1: expected a JSON object \(one result record\), got list$"),
    "a bare number": ("3\n", r"results.jsonl:1: expected a JSON object"),
}


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_report_and_compare_on_a_bad_results_file(cli_error, work, command, case):
    import re

    text, message = BAD_RESULTS[case]
    path = work / "results.jsonl"
    if text is None:  # a run killed while writing: the last line stops half-way
        full = _records(path).read_text()
        path.write_text(full[: len(full) - 40])
    else:
        path.write_text(text)
    args = ["report", "results.jsonl"] if command == "report" else ["compare", "results.jsonl", "ae", "thresh"]
    assert re.search(message, cli_error(*args))


def test_report_on_a_directory(cli_error, work):
    (work / "run").mkdir()
    assert cli_error("report", "run").endswith("run is a directory; pass a results file (a run writes <run dir>/results.jsonl)")


# -- phantom -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "file.txt"], "--out file.txt is a file, not a directory"),
        (["--out", "file.txt/cohorts"], "--out file.txt/cohorts cannot be created: "),
        (["--preview", "."], "--preview . is a directory; name the PNG file to write"),
        (["--preview", "file.txt/preview.png"], "--preview file.txt/preview.png: folder file.txt is a file, not a directory"),
        (["--out", "cohorts", "--preview", "file.txt/p/p.png"], "--preview file.txt/p/p.png: folder file.txt/p cannot be created: "),
        (["--preview", "p.png", "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295], got -1"),
        ([], "uadbench phantom needs --out DIR and/or --preview FILE.png"),
    ],
)
def test_phantom_bad_output(cli_error, args, message):
    assert message in cli_error("phantom", *args)


# -- ui ------------------------------------------------------------------------------------------
@pytest.fixture
def store(work):
    run = work / "odd run?#%ü"
    run.mkdir()
    (run / "mlflow.db").write_bytes(b"")
    return run


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(monkeypatch):
    """Capture the server command instead of starting it."""
    from uadbench.run import ui

    calls: list[list[str]] = []
    def serve(cmd, env, **kw):  # the store travels in the environment; shown here as the option it stands for
        calls.append([*cmd, "--backend-store-uri", env["MLFLOW_BACKEND_STORE_URI"]])
        return 0

    monkeypatch.setattr(ui, "serve_process_group", serve)
    return calls


def test_ui_port_in_use(cli_error, store, served):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = cli_error("ui", "--run-dir", str(store), "--port", str(port))
    assert line.startswith(f"uadbench: error: cannot serve on 127.0.0.1:{port}: Address already in use")
    assert not served


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_ui_port_out_of_range(cli_error, store, served, port):
    assert "argument --port: must be an integer in [1, 65535]" in cli_error("ui", "--run-dir", str(store), "--port", port)
    assert not served


def test_ui_without_a_store(cli_error, work):
    assert "no MLflow store at nowhere/mlflow.db" in cli_error("ui", "--run-dir", "nowhere")


def test_ui_runs_this_environments_mlflow_on_the_right_store(work, store, served, monkeypatch, capsys):
    from uadbench.run.tracking import default_tracking_uri
    from uadbench.run.ui import mlflow_executable

    decoy = work / "bin"
    decoy.mkdir()
    (decoy / "mlflow").write_text("#!/bin/sh\nexit 3\n")
    (decoy / "mlflow").chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy}{os.pathsep}{os.environ['PATH']}")
    assert main(["ui", "--run-dir", str(store), "--port", str(free_port())]) == 0
    (cmd,) = served
    assert cmd[0] == str(mlflow_executable()) == str(Path(sys.executable).with_name("mlflow"))
    assert cmd[cmd.index("--backend-store-uri") + 1] == default_tracking_uri(store)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err


def test_ui_refuses_a_host_beyond_this_machine_without_allow_remote(cli_error, store, served):
    line = cli_error("ui", "--run-dir", str(store), "--host", "0.0.0.0", "--port", str(free_port()))
    assert line.startswith("uadbench: error: --host 0.0.0.0 is not a loopback address") and "add --allow-remote" in line
    assert not served


def test_ui_warns_when_serving_beyond_this_machine(store, served, capsys):
    assert main(["ui", "--run-dir", str(store), "--host", "0.0.0.0", "--port", str(free_port()), "--allow-remote"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uadbench: warning: --host 0.0.0.0 is not a loopback address")
    assert served[0][served[0].index("--host") + 1] == "0.0.0.0"


def test_ui_without_mlflow_in_this_environment(cli_error, store, served, monkeypatch, work):
    monkeypatch.setattr(sys, "executable", str(work / "venv" / "bin" / "python"))
    assert "no mlflow command beside" in cli_error("ui", "--run-dir", str(store))
    assert not served


def test_tracking_uris_are_redacted_where_they_are_shown():
    from uadbench.run.tracking import redact_uri

    assert redact_uri("postgresql://alice:s3cret@db.lab:5432/mlflow") == "postgresql://alice:***@db.lab:5432/mlflow"
    assert redact_uri("https://mlflow.lab/?token=abc&x=1") == "https://mlflow.lab/?token=***&x=1"
    assert redact_uri("sqlite:////runs/q/mlflow.db") == "sqlite:////runs/q/mlflow.db"


def test_ui_keeps_the_store_off_the_command_line(served, capsys, monkeypatch):
    from uadbench.run import ui

    monkeypatch.setattr(ui, "check_port_free", lambda host, port: None)
    uri = "postgresql://alice:s3cret@127.0.0.1:5432/mlflow"
    assert main(["ui", "--tracking-uri", uri, "--port", str(free_port())]) == 0
    (cmd,) = served
    assert cmd[-2:] == ["--backend-store-uri", uri]  # given through MLFLOW_BACKEND_STORE_URI (the fixture appends it)
    assert "s3cret" not in " ".join(cmd[:-2]) and "s3cret" not in capsys.readouterr().out
