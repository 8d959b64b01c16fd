"""A single-node Slurm on localhost for tests, from Debian's ``slurm-wlm`` and ``munge``.

:func:`start_slurm` writes a minimal ``slurm.conf`` for this host into a directory of its own
(state, spool, logs, a fresh munge key and socket), starts ``munged``, ``slurmctld`` and ``slurmd``
in the foreground as children of this process, bound to 127.0.0.1 only
(``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`` with the node at 127.0.0.1), and waits
until ``sinfo`` shows the node idle. Clients find the cluster through ``SLURM_CONF``, so the
host's own Slurm configuration (if any) is never touched. :meth:`SlurmCluster.stop` cancels what
is left and stops the three daemons.

Start it by hand (root needed; the packages: ``apt-get install -y slurm-wlm munge``)::

    python tests/slurm.py up /tmp/slurm      # prints the SLURM_CONF to export; Ctrl-C stops it

If a step fails, :class:`SlurmUnavailable` names the step and carries the daemon's log tail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")


class SlurmUnavailable(RuntimeError):
    """Slurm could not be started here; the message says which step failed and why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_port_range(size: int) -> int:
    """A base port whose ``size`` successors are free on 127.0.0.1 (for srun's listening ports)."""
    for _ in range(50):
        base = _free_port()
        if base + size > 65000:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise SlurmUnavailable("no free range of ports on 127.0.0.1 for srun")


def _tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def slurm_conf(root: Path, *, host: str, cpus: int, memory_mb: int, ctld_port: int, slurmd_port: int, srun_ports: int) -> str:
    return f"""\
# A one-node cluster on localhost for uadbench's tests (written by tests/slurm.py).
ClusterName=uadbench
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SrunPortRange={srun_ports}-{srun_ports + 19}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running one-node cluster; ``env`` holds ``SLURM_CONF`` for its clients."""

    root: Path
    conf: Path
    ports: tuple[int, ...] = ()  # slurmctld, slurmd, then srun's range
    partition: str = "debug"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str, timeout: float = 30) -> str:
        out = subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise SlurmUnavailable(f"`{' '.join(args)}` failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
        return out.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted((self.root / "log").glob("*.log")))

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (in that order)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            try:
                self.command("scancel", "--full", "--quiet", "--user", str(os.getuid()), timeout=10)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and self.command("squeue", "-h", "-o", "%i", timeout=10).strip():
                    time.sleep(0.5)
            except (SlurmUnavailable, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _start(cluster: SlurmCluster, name: str, args: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        cluster.processes[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   env={**os.environ, **cluster.env}, start_new_session=True)


def _wait_for(cluster: SlurmCluster, what: str, check, timeout: float, watch: tuple[str, ...]) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name in watch:
            rc = cluster.processes[name].poll()
            if rc is not None:
                raise SlurmUnavailable(f"{name} exited with status {rc} while waiting for {what}\n{cluster.logs()}")
        try:
            if check():
                return
        except (SlurmUnavailable, subprocess.TimeoutExpired) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what} {last}\n{cluster.logs()}")


def start_slurm(root: str | os.PathLike, *, cpus: int | None = None, timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd for this host under ``root``; raise SlurmUnavailable naming what failed."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if missing:
        raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("starting slurmd needs root (it runs jobs as their owner); this process runs as uid " f"{os.geteuid()}")
    root = Path(root).resolve()
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    os.chmod(key, 0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    ctld_port, slurmd_port, srun_ports = _free_port(), _free_port(), _free_port_range(20)
    conf.write_text(slurm_conf(root, host=host, cpus=cpus or os.cpu_count() or 1, memory_mb=max(256, _memory_mb() // 2),
                               ctld_port=ctld_port, slurmd_port=slurmd_port, srun_ports=srun_ports))
    cluster = SlurmCluster(root, conf, (ctld_port, slurmd_port, *range(srun_ports, srun_ports + 20)))
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"
    try:
        _start(cluster, "munged", [sbin("munged"), "--foreground", "--force", f"--socket={root}/munge/munge.socket",
                                   f"--key-file={key}", f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/munged.seed",
                                   f"--log-file={root}/log/munged.log"], root / "log" / "munged.out.log")
        _wait_for(cluster, "munged's socket", lambda: (root / "munge" / "munge.socket").exists(), 15, ("munged",))
        _start(cluster, "slurmctld", [sbin("slurmctld"), "-D", "-i", "-f", str(conf)], root / "log" / "slurmctld.out.log")
        _wait_for(cluster, "slurmctld", lambda: bool(cluster.command("sinfo", "-h", "-o", "%P", timeout=5)), timeout, ("slurmctld",))
        _start(cluster, "slurmd", [sbin("slurmd"), "-D", "-f", str(conf), "-N", host], root / "log" / "slurmd.out.log")
        _wait_for(cluster, f"node {host} to be idle",
                  lambda: cluster.command("sinfo", "-h", "-N", "-o", "%T", timeout=5).split() == ["idle"], timeout, ("slurmctld", "slurmd"))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "up":
        print("usage: python tests/slurm.py up DIR", file=sys.stderr)
        return 2
    cluster = start_slurm(argv[2])
    print(f"slurm is up: export SLURM_CONF={cluster.conf}  (Ctrl-C stops it)", flush=True)
    try:
        while all(p.poll() is None for p in cluster.processes.values()):
            time.sleep(1)
        print(f"a daemon exited:\n{cluster.logs()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
