"""The child processes of the local control plane: start, watch, stop."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gpushift_testing.common import ControlPlaneError, tail_lines


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Children get SIGTERM when the Python process that started them dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    os.setsid()


@dataclass
class Proc:
    """One component: its command line, its log file (stdout and stderr) and its process."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update(self.env)
        with self.log.open("ab") as logf:
            logf.write(f"### {' '.join(self.argv)}\n".encode())
            logf.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def state(self) -> str:
        if self.alive():
            return "running"
        return f"exited {self.popen.returncode if self.popen else '-'}"

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            tail = "\n".join(tail_lines(self.log, 30))
            raise ControlPlaneError(
                f"{self.name} exited with code {self.popen.returncode}; last log lines:\n{tail}"
            )


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (which may hold spaces):
    [0] is the state, [1] the parent's pid, [11] and [12] utime and stime, [19] the
    start time."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_of(fields: list[str], children: bool = False) -> float:
    """User + system CPU seconds in `proc_stat` fields; `children`: with that of the
    children the process has waited for."""
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a running process so far (Linux /proc): what a bench
    reads at a moment of a process's life, such as its first answer; `children`: with
    that of the children it has waited for."""
    return cpu_of(proc_stat(pid), children)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 grace: float = 10) -> int:
    """Send `sig` (when the process still runs), SIGKILL after `grace` seconds; its exit
    status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def stop_all(procs: Iterable[Proc], grace: float) -> None:
    """SIGTERM all running ones, then SIGKILL those still there after `grace` seconds."""
    running = [p for p in procs if p.alive()]
    for p in running:
        assert p.popen is not None
        with contextlib.suppress(ProcessLookupError):
            p.popen.terminate()
    deadline = time.monotonic() + grace
    for p in running:
        assert p.popen is not None
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.popen.kill()
            p.popen.wait(5)
