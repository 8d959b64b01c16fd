"""``uadbench ui``: the MLflow server over a run's store, supervised as one process group.

The server and the workers it starts run in their own process group, which ends whole when the
server exits or this process gets SIGTERM, SIGHUP or Ctrl-C: no worker is left holding the port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from uadbench.errors import UadbenchError


def serve(run_dir: str | os.PathLike, tracking_uri: str | None, host: str, port: int, *, open_browser: bool = False,
          allow_remote: bool = False) -> int:
    """``uadbench ui``: the MLflow UI over a run's store (or ``tracking_uri``) on ``host:port``,
    until it exits or is told to stop; every path and the port are checked before it starts.

    Prints the address of each grid's comparison view (:func:`uadbench.run.tracking.comparison_address`,
    the latest grid first) and, with ``open_browser``, opens the first once the server answers. A
    ``host`` that is not a loopback address is refused unless ``allow_remote``: the MLflow server
    has no authentication."""
    from uadbench.run import layout
    from uadbench.run.tracking import default_tracking_uri, redact_uri

    if not is_loopback(host) and not allow_remote:
        raise UadbenchError(f"--host {host} is not a loopback address: anyone who can reach this machine could read, edit and delete "
                            "the runs (the MLflow server has no authentication); add --allow-remote to serve there anyway, "
                            "or use --host 127.0.0.1 and an SSH tunnel")
    if tracking_uri:
        uri = tracking_uri
    else:
        db = layout.mlflow_db(Path(run_dir))
        if not db.is_file():
            raise UadbenchError(f"no MLflow store at {db}; pass --run-dir of a finished run or --tracking-uri")
        uri = default_tracking_uri(run_dir)
    mlflow_bin = mlflow_executable()
    if not mlflow_bin.is_file():
        raise UadbenchError(f"no mlflow command beside {sys.executable} ({mlflow_bin}); install uadbench with its dependencies in this environment")
    check_port_free(host, port)
    if not is_loopback(host):
        print(f"uadbench: warning: --host {host} is not a loopback address: anyone who can reach this machine can read, edit "
              "and delete the runs (the MLflow server has no authentication)", file=sys.stderr)
    base = base_url(host, port)
    addresses = comparison_addresses(uri, base)
    # the store goes through the server's environment, not its command line, where `ps` would show a password
    cmd = [str(mlflow_bin), "server", "--host", host, "--port", str(port), "--workers", "1"]
    print(f"serving {redact_uri(uri)} on {base}", flush=True)
    for name, address in addresses:
        print(f"compare the methods of {name}: {address}", flush=True)
    if open_browser:
        open_when_ready(base, addresses[0][1] if addresses else base)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_BACKEND_STORE_URI=uri)
    return serve_process_group(cmd, env)


def base_url(host: str, port: int) -> str:
    """The address a browser on this machine uses for a server bound to ``host:port`` (an
    unspecified address such as 0.0.0.0 is reached on the loopback)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"


def comparison_addresses(uri: str, base: str) -> list[tuple[str, str]]:
    """(experiment, address of its comparison view) for each uadbench experiment of the store, the
    latest first; the views are written into the store first (:func:`uadbench.run.tracking.prepare_views`).
    A store that cannot be read here gets a warning and the plain address of the runs."""
    from uadbench.run.tracking import comparison_address, prepare_views

    try:
        return [(name, comparison_address(base, eid)) for name, eid in prepare_views(uri)]
    except UadbenchError as exc:
        print(f"uadbench: warning: {exc}; open {base}/#/experiments?workflowType=machine_learning", file=sys.stderr)
        return []


def open_when_ready(base: str, address: str, timeout_s: float = 120.0) -> None:
    """Open ``address`` in the user's browser once the server at ``base`` answers (in a thread)."""
    import threading
    import time
    import urllib.request
    import webbrowser

    def wait_and_open() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        webbrowser.open(address)
                        return
            except OSError:
                time.sleep(0.5)

    threading.Thread(target=wait_and_open, name="uadbench-open", daemon=True).start()


def mlflow_executable() -> Path:
    """The ``mlflow`` command of this environment (beside ``sys.executable``), not the first on PATH."""
    return Path(sys.executable).with_name("mlflow.exe" if sys.platform == "win32" else "mlflow")


def is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once, as the server will: a port in use is one line now, not pages later."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UadbenchError(f"--host {host!r}: cannot resolve it ({exc})") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(address)
        except OSError as exc:
            raise UadbenchError(f"cannot serve on {host}:{port}: {exc.strerror}; is another server using it? pick another --port") from None


class _Stop(Exception):
    """A signal asked ``uadbench ui`` to end."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def serve_process_group(cmd: list[str], env: dict[str, str], grace_s: float = 10.0) -> int:
    """Run ``cmd`` (a server) in its own process group until it exits or this process is told to
    stop (SIGTERM, SIGHUP, Ctrl-C); then end the whole group, the server and every worker it
    started: SIGTERM, and SIGKILL to what is left after ``grace_s``. Returns the exit status."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # a new session: its own process group

    def stop(signum: int, frame: object) -> None:
        raise _Stop(signum)

    handled = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, stop) for s in handled}
    try:
        return proc.wait()
    except _Stop as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        end_process_group(proc.pid, grace_s, leader=proc)
        if proc.poll() is None:
            proc.wait()


def end_process_group(pgid: int, grace_s: float = 10.0, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM every process of group ``pgid``; SIGKILL those still there after ``grace_s``.
    ``leader``: the group's leader when it is this process's child (reaped, so it stops counting)."""
    import signal
    import time

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if leader is not None:
                leader.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
