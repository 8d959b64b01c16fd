"""MLflow over HTTP: the smoke grid logged to a real ``mlflow server`` on 127.0.0.1 and read back
through the REST API (runs, the tags the compare view lines up, metrics, artifacts), and
``uadbench ui`` ending its whole server process group on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke.toml"
MLFLOW = Path(sys.executable).with_name("mlflow")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        assert time.time() < deadline, f"no answer from {url}/health within {timeout:.0f} s"
        time.sleep(0.5)


def _api(base: str, endpoint: str, payload: dict | None = None, query: dict | None = None):
    """One REST call: POST a JSON payload, or GET with a query string; JSON back (bytes for artifacts)."""
    url = f"{base}{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
        return json.loads(body) if resp.headers.get_content_type() == "application/json" else body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 (one worker), a sqlite store and served artifacts."""
    where = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{where / 'server.db'}", "--artifacts-destination",
         str(where / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, cwd=where,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def smoke_over_http(server, tmp_path_factory, data_root):
    work = tmp_path_factory.mktemp("smoke-http")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "uadbench.cli", "run", str(SMOKE), "--out", str(work / "run"), "--tracking-uri", server,
                           "--log-examples"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (work / "run" / "results.jsonl").read_text().splitlines()]
    return server, work / "run", records


def test_the_smoke_grid_over_http_reads_back_through_the_rest_api(smoke_over_http):
    url, run_dir, records = smoke_over_http
    assert not (run_dir / "mlflow.db").exists()  # everything went to the server
    exp = _api(url, "/api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": "uadbench-smoke"})["experiment"]
    runs = _api(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    kinds = [t.get("uadbench.kind", "parent") for t in tags]
    assert sorted(kinds) == ["eval"] * 4 + ["fit"] * 2 + ["parent"]
    parent = runs[kinds.index("parent")]["info"]["run_id"]
    assert all(t["mlflow.parentRunId"] == parent for t, k in zip(tags, kinds) if k != "parent")
    # the compare view lines runs up by these tags: method, dataset, shift, severity, seed
    evals = [(r, t) for r, t, k in zip(runs, tags, kinds) if k == "eval"]
    cells = {(t["method"], t["dataset"], t["shift"], t["severity"], t["seed"]) for _, t in evals}
    assert cells == {(m, "phantom-tumour-t2w", s, v, "0") for m in ("thresh", "ae") for s, v in (("none", "None"), ("gamma", "1.5"))}
    by_cell = {(r["method"], r["shift"]): r for r in records}
    for run, t in evals:
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["auprc"] == pytest.approx(by_cell[(t["method"], t["shift"])]["metrics"]["auprc"])
        listed = _api(url, "/api/2.0/mlflow/artifacts/list", query={"run_id": run["info"]["run_id"], "path": "example"})
        names = {Path(f["path"]).name for f in listed["files"]}
        assert "panel.png" in names and any(n.endswith("_anomaly_map.nii.gz") for n in names), names
    run_id = evals[0][0]["info"]["run_id"]
    png = _api(url, "/get-artifact", query={"path": "example/panel.png", "run_uuid": run_id})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    nifti = next(f["path"] for f in _api(url, "/api/2.0/mlflow/artifacts/list", query={"run_id": run_id, "path": "example"})["files"]
                 if f["path"].endswith("_anomaly_map.nii.gz"))
    assert _api(url, "/get-artifact", query={"path": nifti, "run_uuid": run_id})[:2] == b"\x1f\x8b"  # gzip
    # each fit carries its config as a file
    (fit_run, fit_tags) = next((r, t) for r, t, k in zip(runs, tags, kinds) if k == "fit" and t["method"] == "ae")
    config = json.loads(_api(url, "/get-artifact", query={"path": "config.json", "run_uuid": fit_run["info"]["run_id"]}))
    assert config["method"] == "ae" and config["preset"] == "smoke" and config["config_hash"] == fit_tags["config_hash"]
    assert "latent_dim" in config["config"] or config["config"]


def _processes() -> dict[int, tuple[str, int, int]]:
    """(state, parent, process group) of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry)] = (fields[0], int(fields[1]), int(fields[2]))
    return out


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, (state, _, group) in _processes().items() if group == pgid and state != "Z"]


def _children(pid: int) -> list[int]:
    return [child for child, (_, parent, _) in _processes().items() if parent == pid]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see process groups")
def test_ui_ends_the_server_and_its_workers_on_sigterm(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "run"
    store.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}").create_experiment("uadbench-ui")
    port = _free_port()
    server = None
    ui = subprocess.Popen([sys.executable, "-m", "uadbench.cli", "ui", "--run-dir", str(store), "--port", str(port)],
                          env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", ui)
        # the run's store, handed to the server through its environment (not its command line), is the one served
        query = urllib.parse.urlencode({"experiment_name": "uadbench-ui"})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=30) as r:
            assert json.load(r)["experiment"]["name"] == "uadbench-ui"
        (server,) = _children(ui.pid)
        assert os.getpgid(server) == server != os.getpgid(ui.pid)  # the server leads its own process group
        assert "--backend-store-uri" not in open(f"/proc/{server}/cmdline").read().split("\0")
        members = _group_members(server)
        assert len(members) >= 2, members  # the server and its workers
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.time() + 20
        while _group_members(server) and time.time() < deadline:
            time.sleep(0.2)
        assert _group_members(server) == [], "processes of the server's group outlived uadbench ui"
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        if server is not None and _group_members(server):
            os.killpg(server, signal.SIGKILL)
