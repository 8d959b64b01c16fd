"""Cluster executors with real engines: a one-node Slurm on localhost and a local Ray cluster on 127.0.0.1.

The engines are started here (tests/slurm.py for Slurm, the executor itself for Ray) and stopped
after. Each runs a small task graph (order, bounded job arrays of ready tasks, torch threads, a
failure and the tasks that depend on it, a job that Slurm kills) and the smoke grid, whose records
must equal those of the local executor. Slurm is skipped only when it cannot start here, with the
step that failed in the reason.
"""

from __future__ import annotations

import ipaddress
import math
import operator
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import slurm
import torch
from extras import needs_ray, needs_submitit

from uadbench.cli import main
from uadbench.errors import ConfigError, UadbenchError
from uadbench.executors import Task, TaskFailure, create_executor, remote
from uadbench.executors import slurm as slurm_executors
from uadbench.executors.ray import RayExecutor
from uadbench.executors.slurm import SlurmExecutor, parse_slurm_mem, parse_slurm_time
from uadbench.grid import executor_table
from uadbench.records import ResultRecord
from uadbench.run.runner import run_grid

SMOKE = Path(__file__).parent / "data" / "smoke.toml"


# -- without an engine ---------------------------------------------------------------------------
def test_create_executor_refuses_unknown_kinds_and_options():
    with pytest.raises(UadbenchError, match="unknown executor 'sge'; available: local, ray, slurm"):
        create_executor(kind="sge")
    with pytest.raises(UadbenchError, match="the slurm executor has no option address; valid: folder, partition"):
        create_executor(kind="slurm", address="auto")
    with pytest.raises(UadbenchError, match="the local executor has no option partition; valid: none"):
        create_executor(kind="local", partition="gpu")


@pytest.mark.parametrize("kind, package", [("slurm", "submitit"), ("ray", "ray")])
def test_a_missing_optional_package_names_the_extra(monkeypatch, kind, package):
    real = remote.importlib.util.find_spec
    monkeypatch.setattr(remote.importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(UadbenchError, match=rf"the {kind} executor needs the '{package}' package: pip install 'uadbench\[{kind}\]'"):
        create_executor(kind=kind)


@pytest.mark.parametrize("value, minutes", [(90, 90), ("90", 90), ("1:30", 2), ("02:00:00", 120), ("1-0", 1440), ("1-02:30", 1590),
                                            ("0-00:00:30", 1)])
def test_slurm_time_limits_in_minutes(value, minutes):
    assert parse_slurm_time(value) == minutes


@pytest.mark.parametrize("value", ["1h", "", "0", "00:00:00", "1:2:3:4", True, "-5"])
def test_bad_slurm_time_limits_are_refused(value):
    with pytest.raises(UadbenchError, match="slurm time"):
        parse_slurm_time(value)


def test_slurm_memory_sizes():
    assert [parse_slurm_mem(v) for v in ("16G", "16gb", "500", 2048, "1T")] == ["16G", "16G", "500M", "2048M", "1T"]
    for bad in ("16 GiB", "1.5G", "0G", "lots"):
        with pytest.raises(UadbenchError, match="slurm memory"):
            parse_slurm_mem(bad)


@needs_submitit
def test_slurm_job_parameters_follow_the_options(monkeypatch, tmp_path):
    monkeypatch.setattr(slurm_executors.shutil, "which", lambda name: f"/usr/bin/{name}")  # no Slurm needed to build the parameters
    ex = create_executor(3, 1, kind="slurm", partition="gpu", time="2:00:00", mem="32G", gpus=1, cpus=8, folder=tmp_path)
    params = ex.sbatch_parameters()
    assert ex.threads == 8 and params["cpus_per_task"] == 8 and params["gpus_per_node"] == 1
    assert (params["partition"], params["time"], params["mem"]) == ("gpu", 120, "32G")
    assert params["array_parallelism"] == 500 and "additional_parameters" not in params  # no dependency options: none are used
    assert "OMP_NUM_THREADS=8" in params["setup"][0]
    assert "job arrays of up to 500 ready tasks (partition gpu, 8 cpus, 1 gpu, 120 min, 32G memory" in ex.describe()
    bare = create_executor(kind="slurm", threads=2, folder=tmp_path, array_size=20, extra={"qos": "low"}).sbatch_parameters()
    assert bare["time"] is None and bare["cpus_per_task"] == 2 and not {"partition", "mem", "gpus_per_node"} & set(bare)
    assert bare["array_parallelism"] == 20 and bare["additional_parameters"] == {"qos": "low"}
    with pytest.raises(UadbenchError, match="slurm gpus per job must be an integer >= 0"):
        create_executor(kind="slurm", gpus=-1, folder=tmp_path)
    with pytest.raises(UadbenchError, match="slurm cpus per job must be an integer >= 1"):
        create_executor(kind="slurm", cpus=0, folder=tmp_path)
    with pytest.raises(UadbenchError, match="slurm array size must be an integer >= 1, got 0"):
        create_executor(kind="slurm", array_size=0, folder=tmp_path)
    with pytest.raises(UadbenchError, match="slurm jobs queued at once must be an integer >= 1"):
        create_executor(kind="slurm", max_queued=0, folder=tmp_path)


def test_priority_order_puts_every_task_after_its_parents():
    from uadbench.executors.base import priority_order

    tasks = [Task("d", abs, (1,), ("c",)), Task("c", abs, (1,), ("a", "b")), Task("a", abs, (1,)), Task("b", abs, (1,), ("a",)),
             Task("x", abs, (1,))]
    assert [t.key for t in sorted(tasks, key=priority_order(tasks))] == ["a", "b", "c", "d", "x"]


def test_grid_executor_table():
    assert executor_table({}) == {}
    table = {"kind": "slurm", "partition": "gpu", "time": "4:00:00", "mem": "32G", "gpus": 1, "cpus": 8}
    assert executor_table({"executor": table}) == table
    for raw, message in [
        ({"executor": "slurm"}, "'executor' must be a table"),
        ({"executor": {"queue": "gpu"}}, "unknown key 'queue'"),
        ({"executor": {"gpus": "one"}}, "gpus must be an integer"),
        ({"executor": {"gpus": True}}, "gpus must be an integer"),
        ({"executor": {"kind": "sge"}}, "g.toml: \\[executor\\] kind: unknown executor 'sge'; available: local, ray, slurm"),
        ({"executor": {"kind": "slrum"}}, "did you mean 'slurm'\\?"),
    ]:
        with pytest.raises(ConfigError, match=message):
            executor_table(raw, "g.toml")


@pytest.mark.parametrize("flags, message", [
    (["--slurm-time", "90"], "--slurm-time need --executor slurm (the executor is 'local')"),
    (["--executor", "ray", "--slurm-partition", "gpu"], "--slurm-partition need --executor slurm (the executor is 'ray')"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "slurm", "--slurm-time", "1h"], "slurm time '1h' is not a Slurm time limit"),
    (["--executor", "slurm", "--slurm-mem", "lots"], "slurm memory 'lots' is not a size"),
])
@needs_submitit
def test_cli_executor_flags_fail_in_one_line(monkeypatch, tmp_path, capsys, flags, message):
    monkeypatch.setattr(slurm_executors.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "run"), "--no-tracking", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uadbench: error: ") and message in err and "\n" not in err


@needs_submitit
def test_cli_flags_override_the_grid_executor_table(monkeypatch, tmp_path):
    from uadbench.cli import _run_executor, build_parser
    from uadbench.executors import SerialExecutor
    from uadbench.grid import load_grid

    monkeypatch.setattr(slurm_executors.shutil, "which", lambda name: f"/usr/bin/{name}")
    grid = tmp_path / "g.toml"
    grid.write_text(SMOKE.read_text() + '\n[executor]\nkind = "slurm"\npartition = "gpu"\ntime = 60\ngpus = 1\naddress = "auto"\n')
    spec = load_grid(grid)
    assert spec.spec_hash == load_grid(SMOKE).spec_hash  # where a grid runs is not what it measures

    def executor(*flags):
        return _run_executor(build_parser().parse_args(["run", str(grid), *flags]), spec, tmp_path / "run")

    ex = executor("--executor", "slurm", "--slurm-time", "30", "--threads", "2")
    assert isinstance(ex, SlurmExecutor) and (ex.partition, ex.time_min, ex.gpus, ex.threads) == ("gpu", 30, 1, 2)
    assert ex.folder == (tmp_path / "run" / "slurm").absolute()
    assert isinstance(executor("--executor", "local"), SerialExecutor)
    ray = executor("--executor", "ray", "--ray-address", "ray://head:10001")
    assert isinstance(ray, RayExecutor) and ray.address == "ray://head:10001" and ray.gpus == 1
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert executor("--executor", "ray").address is None  # the grid's address is never joined: a local cluster
    monkeypatch.setenv("RAY_ADDRESS", "ray://mine:10001")
    assert executor("--executor", "ray").address == "ray://mine:10001"  # the user's environment is
    grid.write_text(SMOKE.read_text() + '\n[executor]\nkind = "slurm"\ntime = "1h"\n')
    with pytest.raises(UadbenchError, match="slurm time '1h' is not a Slurm time limit"):
        _run_executor(build_parser().parse_args(["run", str(grid), "--executor", "slurm"]), load_grid(grid), tmp_path / "run")


def test_cli_names_the_extra_when_its_package_is_missing(monkeypatch, tmp_path, capsys):
    real = remote.importlib.util.find_spec
    monkeypatch.setattr(remote.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "run"), "--no-tracking", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "uadbench: error: the ray executor needs the 'ray' package: pip install 'uadbench[ray]'"


def test_cli_bad_slurm_numbers_fail_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(SMOKE), "--executor", "slurm", "--slurm-gpus", "-1"])
    assert exc.value.code == 2
    assert "argument --slurm-gpus: must be an integer >= 0, got -1" in capsys.readouterr().err


# -- helpers -------------------------------------------------------------------------------------
def listening() -> set[tuple[str, int]]:
    """Every listening TCP socket of this machine, as (address, port)."""
    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host-endian
            out.add((str(ipaddress.ip_address(words)), int(port, 16)))
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def comparable(record: ResultRecord) -> dict:
    """A record without what legitimately differs between two runs: when it was made and how long it took."""
    data = record.to_dict()
    data.pop("created")
    data["cost"] = {k: v for k, v in data["cost"].items() if "seconds" not in k}
    return data


def graph() -> list[Task]:
    """Three roots (one array on Slurm), a failure, a task that depends on it, and a join."""
    return [
        Task("a", operator.mul, (2, 3)),
        Task("b", math.sqrt, (-1,)),
        Task("threads", torch.get_num_threads),
        Task("c", operator.add, (1, 1), ("a",)),
        Task("d", operator.add, (1, 2), ("b",)),
        Task("e", operator.add, (5, 5), ("c", "threads")),
    ]


def check_graph_outcome(seen: list[tuple[Task, object]], threads: int) -> None:
    order = [task.key for task, _ in seen]
    results = dict((task.key, result) for task, result in seen)
    assert sorted(order) == ["a", "b", "c", "d", "e", "threads"]
    assert order.index("c") > order.index("a") and order.index("e") > max(order.index("c"), order.index("threads"))
    assert order.index("d") > order.index("b")
    assert (results["a"], results["c"], results["e"], results["threads"]) == (6, 2, 10, threads)
    failure, skipped = results["b"], results["d"]
    assert isinstance(failure, TaskFailure) and failure.error == "ValueError: math domain error" and failure.dependency is None
    assert "math domain error" in failure.traceback
    assert isinstance(skipped, TaskFailure) and skipped.dependency == "b" and skipped.error.startswith("not run: b failed (ValueError")


@pytest.fixture(scope="module")
def local_records(tmp_path_factory, data_root):
    """The smoke grid on the local executor: the records every cluster run must reproduce."""
    out = tmp_path_factory.mktemp("local-run")
    summary = run_grid(SMOKE, out_dir=out, track=False, executor=create_executor(1, 1))
    assert summary.records and not summary.failures
    return summary.records


def assert_same_records(records: list[ResultRecord], reference: list[ResultRecord]) -> None:
    assert len(records) == len(reference) == 4  # thresh and ae x (none, gamma@1.5)
    by_key = {r.eval_key: r for r in records}
    assert set(by_key) == {r.eval_key for r in reference}
    for ref in reference:
        got = by_key[ref.eval_key]
        assert got.metrics == ref.metrics and got.per_volume == ref.per_volume and got.thresholds == ref.thresholds
        assert comparable(got) == comparable(ref)


# -- Slurm ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm for this module (SLURM_CONF set for its clients); stopped after."""
    try:
        running = slurm.start_slurm(tmp_path_factory.mktemp("slurm"))
    except slurm.SlurmUnavailable as exc:
        pytest.skip(f"Slurm could not be started here: {exc}")
    saved = os.environ.get("SLURM_CONF")
    os.environ.update(running.env)
    try:
        yield running
    finally:
        running.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


def slurm_executor(folder: Path, **options):
    return create_executor(kind="slurm", folder=folder, poll_s=0.3, squeue_s=1.0, **options)


def submissions(folder: Path) -> dict[tuple, dict]:
    """What reached Slurm, by task arguments: each job's id, its sbatch script and when it was
    submitted (the script's time) and finished (its result file's time, None without one)."""
    from submitit.core.utils import pickle_load

    out = {}
    for pickled in folder.glob("*_submitted.pkl"):
        job_id = pickled.name.removesuffix("_submitted.pkl")
        script = folder / f"{job_id.split('_')[0]}_submission.sh"
        result = folder / f"{job_id}_0_result.pkl"
        args = pickle_load(pickled).args[2]  # run_with_threads(threads, fn, args, ...)
        out[args] = {"job": job_id, "script": script.read_text(), "submitted": script.stat().st_mtime,
                     "finished": result.stat().st_mtime if result.exists() else None}
    return out


def most_at_once(jobs: list[dict]) -> int:
    """The most jobs that had been submitted and had not written their result, at any submission."""
    return max(sum(1 for j in jobs if j["submitted"] <= t and (j["finished"] is None or j["finished"] > t))
               for t in {j["submitted"] for j in jobs})


@needs_submitit
@pytest.mark.slow
def test_slurm_submits_ready_tasks_as_bounded_arrays(slurm_cluster, tmp_path):
    assert all(is_loopback(address) for address, port in listening() if port in slurm_cluster.ports)
    ex = slurm_executor(tmp_path / "jobs", array_size=2)
    idle: list[float] = []
    ex.on_idle, ex.idle_every = lambda: idle.append(time.monotonic()), 0.5  # the runner reads live fit logs then
    check_graph_outcome(list(ex.run(graph())), threads=1)
    assert ex.polls and idle
    assert stat.S_IMODE((tmp_path / "jobs").stat().st_mode) == 0o700  # submitit's pickles: this user's alone
    jobs = submissions(tmp_path / "jobs")
    a, b, threads, c, e = (jobs[args] for args in [(2, 3), (-1,), (), (1, 1), (5, 5)])
    assert (1, 2) not in jobs  # d depends on the failed b: it never reached Slurm
    # the three roots are ready together: an array of two (array_size) and one job
    assert a["script"] == b["script"] and "#SBATCH --array=0-1%2" in a["script"] and "--array" not in threads["script"]
    assert all("--dependency" not in j["script"] and "#SBATCH --cpus-per-task=1" in j["script"] for j in jobs.values())
    # a task is submitted once every task it depends on has its result
    assert c["submitted"] >= a["finished"] and e["submitted"] >= max(c["finished"], threads["finished"])


@needs_submitit
@pytest.mark.slow
def test_slurm_keeps_at_most_max_queued_jobs_in_the_queue(slurm_cluster, tmp_path):
    tasks = [Task(f"r{i}", operator.add, (i, 10)) for i in range(5)]
    ex = slurm_executor(tmp_path / "jobs", array_size=2, max_queued=3)
    assert {task.key: result for task, result in ex.run(tasks)} == {f"r{i}": i + 10 for i in range(5)}
    jobs = submissions(tmp_path / "jobs")
    assert len(jobs) == 5 and most_at_once(list(jobs.values())) <= 3
    assert all("--array=0-1%2" in j["script"] or "--array" not in j["script"] for j in jobs.values())  # arrays of two at most


@needs_submitit
def test_slurm_refusing_the_jobs_is_one_line(slurm_cluster, tmp_path):
    with pytest.raises(UadbenchError, match="Slurm refused the jobs: sbatch: error: .*[Pp]artition") as exc:
        list(slurm_executor(tmp_path / "jobs", partition="nowhere").run(graph()))
    assert "\n" not in str(exc.value)


@needs_submitit
@pytest.mark.slow
def test_a_job_that_slurm_kills_fails_with_its_log_tail(slurm_cluster, tmp_path):
    ex = slurm_executor(tmp_path / "jobs", job_name="uadbench-kill-test", result_grace_s=1.0)
    # submitit's job ignores SIGTERM, so scancel ends it with SIGKILL (KillWait later), before any result file
    tasks = [Task("slow", exec, ("print('started', flush=True); import time; time.sleep(120)",)), Task("after", abs, (-1,), ("slow",))]
    killer = threading.Thread(target=kill_when_started, args=(slurm_cluster, tmp_path / "jobs", "uadbench-kill-test"))
    killer.start()
    seen = dict((task.key, result) for task, result in ex.run(tasks))
    killer.join()
    failure = seen["slow"]
    assert isinstance(failure, TaskFailure) and "without a result" in failure.error
    assert "started" in failure.traceback and "CANCELLED" in failure.traceback  # the job's log tail: its output, Slurm's word
    assert isinstance(seen["after"], TaskFailure) and seen["after"].dependency == "slow"


def kill_when_started(cluster: slurm.SlurmCluster, folder: Path, name: str) -> None:
    """scancel the job called ``name`` once its log shows that its command runs."""
    deadline = time.monotonic() + 90
    while not any("started" in p.read_text() for p in folder.glob("*_0_log.out")) and time.monotonic() < deadline:
        time.sleep(0.3)
    cluster.command("scancel", "--name", name)


@needs_submitit
@pytest.mark.slow
def test_smoke_grid_on_slurm_gives_the_local_records(slurm_cluster, local_records, tmp_path):
    summary = run_grid(SMOKE, out_dir=tmp_path / "run", track=False, executor=slurm_executor(tmp_path / "run" / "slurm"))
    assert not summary.failures, [f.line() for f in summary.failures]
    assert_same_records(summary.records, local_records)
    assert len(list((tmp_path / "run" / "slurm").glob("*_result.pkl"))) == 4  # two fits, two evaluation tasks: all on Slurm


# -- Ray -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_installed():
    """Tests that start Ray carry @needs_ray: this fixture only orders them after the import check."""
    import ray  # noqa: F401


class SocketWatch:
    """Every listening socket that appears while a run goes on."""

    def __init__(self) -> None:
        self.before, self.seen = listening(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.seen |= listening() - self.before

    def stop(self) -> set[tuple[str, int]]:
        self._stop.set()
        self._thread.join()
        return self.seen


@pytest.fixture
def ray_head(ray_installed, tmp_path, monkeypatch):
    """A Ray head started with ``ray start --head --block`` on 127.0.0.1 (stopped after); yields its address."""
    from ray._private import ray_constants

    # this process joins as a driver: keep its own address on the loopback interface too
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    port = slurm._free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"], stdout=open(tmp_path / "head.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # a loopback-only test head: no token to hand around
    try:
        deadline = time.monotonic() + 90
        while not any(p == port for _, p in listening()):
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)


@needs_ray
@pytest.mark.slow
def test_ray_executor_joins_a_running_cluster_by_address(ray_head):
    ex = create_executor(kind="ray", address=ray_head)
    assert ex.describe() == f"Ray cluster at {ray_head} (1 cpu per task)"
    idle: list[float] = []
    ex.on_idle, ex.idle_every = lambda: idle.append(time.monotonic()), 0.1
    check_graph_outcome(list(ex.run(graph())), threads=1)
    assert ex.polls and idle
    assert not sys.modules["ray"].is_initialized()  # disconnected after the run; the cluster goes on


@needs_ray
@pytest.mark.slow
def test_smoke_grid_on_a_local_ray_cluster_gives_the_local_records_on_loopback_only(ray_installed, local_records, tmp_path):
    watch = SocketWatch()
    summary = run_grid(SMOKE, out_dir=tmp_path / "run", track=False, executor=create_executor(2, 1, kind="ray"))
    opened = watch.stop()
    assert not summary.failures, [f.line() for f in summary.failures]
    assert_same_records(summary.records, local_records)
    assert opened, "no listening socket seen while the Ray cluster ran"
    assert all(is_loopback(address) for address, _ in opened), f"listening beyond loopback: {sorted(opened)}"
    assert not sys.modules["ray"].is_initialized()  # the local cluster is shut down after the run


_JOIN = """
import sys, ray
try:
    ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False)
    print("joined", ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60))
except Exception as exc:
    print("refused", type(exc).__name__)
"""


@needs_ray
@pytest.mark.slow
def test_the_local_ray_cluster_requires_its_token(ray_installed, tmp_path, monkeypatch):
    """A process of this machine without the run's token (none, or a wrong one) cannot join the
    local cluster; the run's own tasks go on; the token is written nowhere and leaves the
    environment with the cluster."""
    from uadbench.executors.ray import supports_token_auth

    if not supports_token_auth():
        pytest.skip("the installed Ray has no token authentication")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where Ray would keep a token of its own (~/.ray/auth_token)
    before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    ex = create_executor(kind="ray", local_cpus=1)
    with ex._connected() as ray:
        assert os.environ["RAY_AUTH_MODE"] == "token" and len(os.environ["RAY_AUTH_TOKEN"]) == 64
        assert ray.get(ray.remote(lambda: 6 * 7).remote(), timeout=120) == 42
        gcs = ray.get_runtime_context().gcs_address
        assert gcs.startswith("127.0.0.1:")
        outsiders = {"no token": {"RAY_AUTH_MODE": "disabled"}, "a wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}}
        for name, extra in outsiders.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | extra | {"HOME": str(tmp_path)}
            proc = subprocess.run([sys.executable, "-c", _JOIN, gcs], env=env, capture_output=True, text=True, timeout=180)
            assert "joined" not in proc.stdout and "refused" in proc.stdout, f"{name}: {proc.stdout[-1000:]} {proc.stderr[-1000:]}"
            print(name, proc.stdout.strip())
        token = os.environ["RAY_AUTH_TOKEN"]
        env = {**os.environ, "HOME": str(tmp_path)}
        proc = subprocess.run([sys.executable, "-c", _JOIN, gcs], env=env, capture_output=True, text=True, timeout=180)
        assert "joined 42" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]  # the check itself can tell a refusal
    assert {k: os.environ.get(k) for k in before} == before and token not in "".join(os.environ.values())
    assert not (tmp_path / "home").exists(), "the token was written to a file"
