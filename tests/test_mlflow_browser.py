"""MLflow comparisons in a real browser: ``uadbench ui`` on a smoke run, the system Chromium driven
by Playwright in a fresh profile (nothing downloaded at test time).

- The address ``uadbench ui`` prints opens, with no click, the evaluation runs in model-training
  mode with every method's name and AUPRC.
- MLflow's compare page for two evaluation runs shows ``method`` as a parameter row with the two
  methods.

A failing check saves a screenshot of the page under pytest's tmp path and names it. With
``UADBENCH_DOCS_SCREENSHOT=<path>`` the landing page's screenshot is also written there (the
README's ``docs/mlflow-compare.png`` is made this way)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke.toml"
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the ui's process group is POSIX")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_root):
    """A smoke run (through the CLI) and ``uadbench ui`` on it: (base URL, printed address, run dir)."""
    work = tmp_path_factory.mktemp("mlflow-browser")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "uadbench.cli", "run", str(SMOKE), "--out", str(work / "run")], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "uadbench.cli", "ui", "--run-dir", str(work / "run"), "--port", str(port)],
                          cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        printed = [ui.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        found = re.search(r"compare the methods of uadbench-smoke: (\S+)", "".join(printed))
        assert found, f"uadbench ui printed no comparison address: {printed}"
        # the server logs to the same pipe: keep reading it, or a full pipe would stall the server
        threading.Thread(target=lambda: [None for _ in ui.stdout], daemon=True).start()  # type: ignore[union-attr]
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert ui.poll() is None, f"uadbench ui exited with {ui.returncode}"
            assert time.time() < deadline, f"no answer from {base}/health"
            time.sleep(0.5)
        yield base, found.group(1), work / "run"
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is in the test extra: pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page in a fresh profile (a new browser context: no cookies, no local storage)."""
    context = browser.new_context(viewport={"width": 1400, "height": 700})
    yield context.new_page()
    context.close()


@contextlib.contextmanager
def screenshot_on_failure(page, path: Path):
    """Save a screenshot of ``page`` to ``path`` when the block fails, and name it in the failure."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
        raise AssertionError(f"{exc}\nscreenshot: {path}") from exc


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def _numbers(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)]


def test_the_printed_address_shows_every_methods_auprc_with_no_click(served, page, tmp_path):
    base, address, run_dir = served
    records = _records(run_dir)
    assert address.startswith(base) and "workflowType=machine_learning" in address
    page.goto(address)
    with screenshot_on_failure(page, tmp_path / "comparison-view.png"):
        for rec in records:  # each cell's run, named by what differs
            shift = "none" if rec["shift"] == "none" else f"{rec['shift']}@{rec['severity']:g}"
            name = f"{rec['label']} · {rec['dataset']} · {shift} · s{rec['seed']}"
            page.get_by_text(name).first.wait_for(timeout=60_000)
        page.get_by_text("auprc", exact=True).first.wait_for(timeout=30_000)
        text = page.inner_text("body")
        assert "Welcome to MLflow" not in text  # not the GenAI home
        shown = _numbers(text)
        for rec in records:
            assert any(abs(v - rec["metrics"]["auprc"]) < 1e-9 for v in shown), (rec["method"], rec["metrics"]["auprc"])
        cells = page.locator(".ag-center-cols-container").inner_text()
        for method in {r["method"] for r in records}:
            assert re.search(rf"(^|\s){method}(\s|$)", cells), f"method {method!r} is not in the table"
        assert f"{len(records)} matching runs" in text
    if os.environ.get("UADBENCH_DOCS_SCREENSHOT"):
        page.screenshot(path=os.environ["UADBENCH_DOCS_SCREENSHOT"])


def test_the_compare_page_shows_method_as_a_parameter_that_differs(served, page, tmp_path):
    from mlflow.tracking import MlflowClient

    base, _, run_dir = served
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uadbench-smoke")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`uadbench.kind` = 'eval' and params.shift = 'none'")
    assert sorted(r.data.params["method"] for r in runs) == ["ae", "thresh"]
    ids, names = [r.info.run_id for r in runs], [r.info.run_name for r in runs]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([experiment.experiment_id]),
                                    "workflowType": "machine_learning"})
    page.goto(f"{base}/#/compare-runs?{query}")
    with screenshot_on_failure(page, tmp_path / "compare-page.png"):
        for name in names:
            page.get_by_text(name).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        start = text.index("Parameters\nShow diff only")  # the parameter table (not the plot's axis picker)
        params = text[start:text.index("Metrics", start)]
        methods = [r.data.params["method"] for r in runs]
        assert f"method\t{methods[0]}\t{methods[1]}" in params, params[:2000]
        assert f"dataset\t{runs[0].data.params['dataset']}\t{runs[1].data.params['dataset']}" in params
