"""The Ray executor: every task a ``ray.remote`` call, started by Ray once its parents are done.

The submitting process alone writes results and MLflow; the tasks read and write the run's cache,
which must be on a filesystem every node sees. A task that fails yields a
:class:`~uadbench.executors.TaskFailure`, the tasks that depend on it yield one without running,
and the others go on.

``address`` joins a running cluster (``"auto"``, ``"ray://head:10001"``, ...); it comes from the
caller (``uadbench run --ray-address``) or the ``RAY_ADDRESS`` environment variable, never from a
grid file: Ray unpickles every result the cluster sends back, so joining a cluster is trusting it.
Without one, a local cluster is started for the run, bound to 127.0.0.1 only, without dashboard
or usage statistics, and shut down afterwards. Loopback is not private on a shared login node, so
where the installed Ray has token authentication (``RAY_AUTH_MODE=token``; 2.60 has it) the
local cluster requires a token made for the run (256 random bits, handed to Ray's processes
through their environment, which only this user can read, and written nowhere); an older Ray
starts it without one, and the run says so. Every task asks for ``num_cpus`` (= torch threads)
and ``num_gpus``; its parents' object refs are passed as arguments, so Ray starts it once they
are done.

The optional package: ``pip install 'uadbench[ray]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from uadbench.errors import UadbenchError
from uadbench.executors.base import Executor, Task, TaskFailure, check_graph, failed_dependency, priority_order, register_executor
from uadbench.executors.remote import LOG_TAIL_LINES, RemoteExecutor, count, error_line, module_roots, require, run_with_threads


def _ray_task(threads: int, fn: Callable[..., Any], args: tuple[Any, ...], modules: tuple[str, ...], roots: tuple[str, ...],
              cwd: str, *parents: Any) -> Any:
    """A task on a Ray worker; ``parents`` are its dependencies' results, passed only to be waited for."""
    return run_with_threads(threads, fn, args, modules, roots, cwd)


# Ray reads the first when it is imported and when it starts its processes: it keeps the node
# address, and so every server of a local cluster, on the loopback interface.
_LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    """``values`` in the environment (None: unset) for the block, then what was there before."""
    saved = {k: os.environ.get(k) for k in values}

    def put(items) -> None:
        for key, value in items:
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    put(values.items())
    try:
        yield
    finally:
        put(saved.items())


def supports_token_auth() -> bool:
    """Whether the installed Ray can require a token of every client (``RAY_AUTH_MODE=token``)."""
    return importlib.util.find_spec("ray._private.authentication.authentication_token_setup") is not None


def _reload_auth_config() -> None:
    """Make Ray (already imported) read its authentication settings from the environment again."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # not in ray's stubs

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _token_auth() -> Iterator[bool]:
    """For the block, a local cluster that requires a fresh token of every client, where the
    installed Ray can; yields whether it does."""
    if not supports_token_auth():
        print("uadbench: warning: the installed Ray has no token authentication (RAY_AUTH_MODE): the local cluster on 127.0.0.1 "
              "accepts any process of this machine; a Ray with token authentication closes it to other users", file=sys.stderr, flush=True)
        yield False
        return
    token = secrets.token_hex(32)  # what Ray's own generator makes: 256 bits
    try:
        with _environ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_AUTH_TOKEN_PATH": None}):
            _reload_auth_config()
            yield True
    finally:
        _reload_auth_config()  # the settings of before, for a later cluster of this process


def _ray_failure(exc: BaseException) -> TaskFailure:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):  # a RayTaskError: the task itself raised
        text = str(cause).strip().splitlines()
        error = f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")
    else:
        error = f"{type(exc).__name__}: {error_line(str(exc), '')}".rstrip(": ")
    return TaskFailure(error, "\n".join(str(exc).strip().splitlines()[-4 * LOG_TAIL_LINES:]))


@register_executor("ray", "a Ray cluster (--ray-address or $RAY_ADDRESS), else a local one on 127.0.0.1 (pip install 'uadbench[ray]')")
class RayExecutor(RemoteExecutor):
    """Tasks as ``ray.remote`` calls, each started by Ray once its parents' object refs resolve.

    ``address``: a running cluster to join; None starts a local one on 127.0.0.1 for the run, of
    ``local_cpus`` CPUs (default: all). ``threads`` = ``num_cpus`` per task; ``gpus`` per task.
    ``modules``: run-time plugin modules every task imports first.
    """

    options: ClassVar[tuple[str, ...]] = ("address", "gpus", "cpus", "local_cpus", "init_options")

    def __init__(self, threads: int = 1, *, address: str | None = None, gpus: float = 0, local_cpus: int | None = None,
                 modules: Sequence[str] = (), init_options: dict[str, Any] | None = None) -> None:
        super().__init__(count(threads, "ray cpus per task", 1))
        require("ray", "ray", "ray")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise UadbenchError(f"ray address must be a cluster address such as 'auto' or 'ray://head:10001', got {address!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
            raise UadbenchError(f"ray gpus per task must be a number >= 0, got {gpus!r}")
        self.address = address
        self.gpus = gpus
        self.local_cpus = None if local_cpus is None else count(local_cpus, "ray local cpus", self.threads)
        self.modules = tuple(modules)
        self.init_options = dict(init_options or {})

    @classmethod
    def create(cls, workers: int, threads: int, modules: Sequence[str], **options: Any) -> Executor:
        """Without ``address``, the cluster named by ``RAY_ADDRESS``, else a local one of ``workers``
        x ``cpus`` CPUs (all CPUs for one worker)."""
        if options.get("address") is None:
            options["address"] = os.environ.get("RAY_ADDRESS") or None
        if options["address"] is None and options.get("local_cpus") is None and workers > 1:
            options["local_cpus"] = workers * (options.get("cpus") or threads)
        return super().create(workers, threads, modules, **options)

    @contextlib.contextmanager
    def _connected(self) -> Iterator[Any]:
        """Ray, connected to ``address``, to the cluster this process already joined, or to a new local one."""
        if self.address is not None:
            import ray

            if ray.is_initialized():
                yield ray
                return
            with _environ({"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}):
                ray.init(address=self.address, configure_logging=False, **self.init_options)
            try:
                yield ray
            finally:
                ray.shutdown()
            return
        with _environ(dict(_LOCAL_RAY_ENV)):
            import ray
            from ray._private import ray_constants

            if ray.is_initialized():
                yield ray
                return
            # the flag is read at import: set it again in case ray was imported before this run
            old_flag, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
            try:
                # address "local": a new cluster even where `ray start` left one to join (RAY_ADDRESS too)
                with _token_auth():
                    ray.init(address="local", num_cpus=self.local_cpus, include_dashboard=False, configure_logging=False,
                             **{"_node_ip_address": "127.0.0.1", **self.init_options})
                    try:
                        ip = ray.util.get_node_ip_address()
                        if ip != "127.0.0.1":
                            raise UadbenchError(f"the local Ray cluster did not bind to 127.0.0.1 (its node address is {ip})")
                        yield ray
                    finally:
                        ray.shutdown()
            finally:
                ray_constants.ENABLE_RAY_CLUSTER = old_flag

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        check_graph(tasks)
        if not tasks:
            return
        with self._connected() as ray:
            remote = ray.remote(_ray_task).options(num_cpus=self.threads, num_gpus=self.gpus, max_retries=0)
            roots, cwd = module_roots(self.modules), os.getcwd()
            refs: dict[str, Any] = {}
            order = sorted(tasks, key=priority_order(tasks))  # parents before children; what others wait for first
            for task in order:
                refs[task.key] = remote.remote(self.threads, task.fn, task.args, self.modules, roots, cwd,
                                               *(refs[d] for d in task.depends_on))
            pending = {refs[t.key]: t for t in order}
            failed: dict[str, TaskFailure] = {}
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.idle_every)
                    if not ready:
                        self.idle()
                    for ref in ready:
                        task = pending.pop(ref)
                        try:
                            result = ray.get(ref)
                        except ray.exceptions.RayError as exc:
                            failed[task.key] = result = _ray_failure(exc)
                        yield task, result
                    for ref, task in list(pending.items()):  # pending has parents first: a chain fails top down
                        skipped = failed_dependency(task, failed)
                        if skipped is not None:
                            with contextlib.suppress(Exception):
                                ray.cancel(ref, force=True)
                            del pending[ref]
                            failed[task.key] = skipped
                            yield task, skipped
            finally:
                for ref in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)

    def describe(self) -> str:
        where = f"Ray cluster at {self.address}" if self.address else "local Ray cluster on 127.0.0.1"
        per = f"{self.threads} cpu{'s' if self.threads > 1 else ''}" + (f", {self.gpus:g} gpu" if self.gpus else "")
        return f"{where} ({per} per task)"
