"""The local processes of one pod, started and stopped as a kubelet would (test harness).

Part of the local pod runner (see pod_runner.py). `LocalPod.tick()` is called often by the
runner's one reconcile thread and never blocks for long: it starts the native sidecars in
order, each only after the previous one passed its startup probe, then the main
containers; it restarts a container that exited (restartPolicy Always, or OnFailure
after a failure) with a growing back-off, and one whose startup probe did not pass in
failureThreshold x periodSeconds. A pod that runs to completion (a Job's, a test's) is
`finished()` once its main containers exited for good.
`stop()` stops the main containers first, then the sidecars, each process group with
SIGTERM and, after the grace period, SIGKILL -- descendants that left the group (Jupyter
starts each kernel in its own session) included.

Processes are started from the runner's long-lived reconcile thread with
PR_SET_PDEATHSIG, so they get SIGTERM if the runner dies (the signal follows the thread
that forked, hence one long-lived thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gpushift_testing.pod_spec import CONTAINER_MARK_ENV, ContainerPlan, PodPlan
from gpushift_testing.processes import _die_with_parent, proc_stat

log = logging.getLogger("gpushift.pod_runner")
MAX_BACKOFF_S = 10.0


@dataclass
class ContainerProcess:
    plan: ContainerPlan
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    started: bool = False  # passed its startup probe (or has none)
    not_before: float = 0.0  # restart back-off
    started_wall: float = 0.0  # time.time() of the last start, for the pod's status
    exited_wall: float = 0.0  # time.time() the exit was first seen (0: not seen yet)
    probing: subprocess.Popen[bytes] | None = None  # the exec startup probe in flight
    probe_deadline: float = 0.0  # when the probe in flight has failed (timeoutSeconds)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        self.end_probe()  # a probe of the process before says nothing about this one
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"### {_clock()} start #{self.restarts}: "
                      f"{' '.join(self.plan.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.plan.argv, env=self.plan.env, cwd=self.plan.cwd, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)  # noqa: PLW1509 - setsid + PDEATHSIG
        self.started_at = time.monotonic()
        self.started_wall, self.exited_wall = time.time(), 0.0
        self.started = self.plan.probe is None

    def start_probe(self, now: float) -> bool | None:
        """Start one run of the startup probe. An exec probe runs on its own, as the
        kubelet runs each probe beside the others (`poll_probe` collects it): None.
        An httpGet probe answers at once: True (2xx/3xx) or False."""
        probe = self.plan.probe
        if probe is None:
            return True
        if probe.argv is not None:
            try:
                self.probing = subprocess.Popen(
                    probe.argv, env=self.plan.env, cwd=self.plan.cwd,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            except OSError:
                return False
            self.probe_deadline = now + probe.timeout_s
            return None
        assert probe.http is not None
        try:
            with urllib.request.urlopen(probe.http, timeout=probe.timeout_s) as response:
                return bool(200 <= response.status < 400)
        except OSError:
            return False

    def end_probe(self) -> None:
        if self.probing is not None:
            with contextlib.suppress(ProcessLookupError):
                self.probing.kill()
            self.probing.wait()
            self.probing = None

    def poll_probe(self, now: float) -> bool | None:
        """The result of the exec probe in flight once it ended (False when it ran past
        its timeoutSeconds: killed, as the kubelet does); None while it runs or when
        none does."""
        if self.probing is None:
            return None
        code = self.probing.poll()
        if code is None and now < self.probe_deadline:
            return None
        self.end_probe()
        return code == 0

    def stop(self, grace: float) -> None:
        """SIGTERM to the process group, SIGKILL to whatever of it is left after `grace`."""
        self.end_probe()
        if self.popen is None:
            return
        family = [*process_family(self.popen.pid), *self.leftovers()]
        self.note(f"SIGTERM (grace {grace:g}s)")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        self.note(f"exited {self.popen.returncode}" if self.popen.returncode is not None
                   else "still running after its grace period")
        deadline = time.monotonic() + max(0.1, grace / 2)
        while any(map(running, family)) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in filter(running, family):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


    def note(self, what: str) -> None:
        """A line of the runner's in the container's log (when it was stopped...)."""
        with contextlib.suppress(OSError), self.log_path.open("ab") as out:
            out.write(f"### {_clock()} {what}\n".encode())

    def leftovers(self) -> list[int]:
        """Running processes of this container besides its main one (kernels, ...)."""
        mark = f"{CONTAINER_MARK_ENV}={self.plan.env[CONTAINER_MARK_ENV]}".encode()
        return [pid for pid in marked_processes(mark)
                if pid != self.pid and running(pid)]

    def end_leftovers(self) -> None:
        """The main process exited: end the rest, as a container runtime tears down the
        container's cgroup (an orphaned kernel would otherwise outlive its server)."""
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _clock() -> str:
    """Wall-clock time to the millisecond, for the runner's lines in container logs
    (set beside the processes' own timestamps to see where a pod's start went)."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


def marked_processes(mark: bytes) -> list[int]:
    """Processes whose environment holds `mark` (``NAME=value``)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if mark + b"\0" in environ or environ.endswith(mark):
            found.append(int(entry.name))
    return found


def process_family(pid: int) -> list[int]:
    """`pid` and all its descendants now, from /proc (kernels leave the process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int(proc_stat(int(entry.name))[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


@dataclass
class LocalPod:
    plan: PodPlan
    log_dir: Path
    # None: every periodSeconds of the probe, as the kubelet (each exec probe is a
    # process of its own: probing faster takes CPU from the sidecar's own start).
    probe_period: float | None = None
    processes: list[ContainerProcess] = field(default_factory=list)
    stopped: bool = False
    stop_times: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Container -> (told to stop, stopped), epoch seconds, once the pod was stopped."""
    _last_probe: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.processes = [ContainerProcess(c, self.log_dir / f"{c.name}.log")
                          for c in self.plan.containers]
        for note in self.plan.skipped:
            log.warning("%s/%s: %s", self.plan.namespace, self.plan.name, note)

    @property
    def key(self) -> tuple[str, str]:
        return self.plan.namespace, self.plan.name

    def container(self, name: str) -> ContainerProcess:
        return next(p for p in self.processes if p.plan.name == name)

    @property
    def probing(self) -> bool:
        """An exec startup probe is running: its end should be seen at once."""
        return any(p.probing is not None for p in self.processes)

    @property
    def main_started(self) -> bool:
        """The main containers have been started (the route to Jupyter may be set)."""
        return all(p.popen is not None for p in self.processes if not p.plan.sidecar)

    def tick(self) -> None:
        if self.stopped:
            return
        self.note_exits()
        now = time.monotonic()
        for proc in self.processes:
            if proc.plan.sidecar and not self._sidecars_before_started(proc):
                return  # native sidecars start in order, each after the one before started
            if not proc.plan.sidecar and not all(p.started for p in self.processes
                                                 if p.plan.sidecar):
                return
            self._tick_one(proc, now)

    def _sidecars_before_started(self, proc: ContainerProcess) -> bool:
        for other in self.processes:
            if other is proc:
                return True
            if other.plan.sidecar and not other.started:
                return False
        return True

    def _restarts(self, proc: ContainerProcess) -> bool:
        """Whether an exited container starts again (the pod's restartPolicy; native
        sidecars always do)."""
        policy = self.plan.restart_policy
        code = proc.popen.returncode if proc.popen is not None else None
        return proc.plan.sidecar or policy == "Always" or (policy == "OnFailure"
                                                           and code != 0)

    def finished(self) -> dict[str, int] | None:
        """A pod that runs to completion (restartPolicy Never/OnFailure) whose main
        containers have all exited for good: their exit codes; else None."""
        mains = [p for p in self.processes if not p.plan.sidecar]
        if self.plan.restart_policy == "Always" or not mains or any(
                p.popen is None or p.alive() or self._restarts(p) for p in mains):
            return None
        # Killed by signal N (Popen: -N): 128 + N, as container runtimes report it.
        return {p.plan.name: (code if code >= 0 else 128 - code)
                for p in mains if p.popen is not None
                for code in [int(p.popen.returncode)]}

    def _tick_one(self, proc: ContainerProcess, now: float) -> None:
        name = f"{self.plan.namespace}/{self.plan.name}/{proc.plan.name}"
        if proc.popen is not None and not proc.alive() and not self._restarts(proc):
            return  # ran to completion (restartPolicy Never / OnFailure and exit 0)
        if now >= proc.not_before and (proc.popen is None or not proc.alive()):
            if proc.popen is not None:
                proc.restarts += 1
                log.warning("%s exited with %s; restart #%d", name, proc.popen.returncode,
                            proc.restarts)
            try:
                proc.start()
            except OSError as e:  # as a container that cannot start: back off and retry
                log.error("%s cannot start: %s", name, e)
                proc.not_before = now + self._backoff(proc)
                return
            log.info("%s started (pid %d)", name, proc.pid)
            return
        if not proc.alive():
            return
        probe = proc.plan.probe
        if proc.started or probe is None:
            return
        passed = proc.poll_probe(now)
        if passed is None:
            if proc.probing is not None:
                return
            period = probe.period_s if self.probe_period is None else min(
                self.probe_period, probe.period_s)
            if now - self._last_probe.get(proc.plan.name, 0.0) < period:
                return
            self._last_probe[proc.plan.name] = now
            passed = proc.start_probe(now)
            if passed is None:
                return
        if passed:
            proc.started = True
            log.info("%s passed its startup probe after %.2fs", name, now - proc.started_at)
            proc.note("passed its startup probe")
        elif now - proc.started_at > probe.deadline_s:
            log.warning("%s failed its startup probe for %.0fs: restarting", name,
                        probe.deadline_s)
            proc.stop(2.0)
            proc.not_before = now + self._backoff(proc)

    def _backoff(self, proc: ContainerProcess) -> float:
        return float(min(MAX_BACKOFF_S, 0.5 * 2 ** proc.restarts))

    def note_exits(self) -> None:
        """Give an exited container its back-off before the next tick restarts it."""
        now = time.monotonic()
        for proc in self.processes:
            if proc.popen is not None and not proc.alive() and proc.not_before < proc.started_at:
                proc.not_before = now + self._backoff(proc)
                proc.exited_wall = time.time()
                proc.end_leftovers()

    def stop(self, grace: float) -> None:
        """Main containers first, then the sidecars in reverse order (as the kubelet);
        when each was told to stop and when it had (`stop_times`)."""
        self.stopped = True
        mains = [p for p in self.processes if not p.plan.sidecar]
        sidecars = [p for p in self.processes if p.plan.sidecar]
        for proc in [*mains, *reversed(sidecars)]:
            began = time.time()
            proc.stop(grace)
            self.stop_times[proc.plan.name] = (began, time.time())

    def pids(self) -> dict[str, int]:
        return {p.plan.name: p.pid for p in self.processes if p.alive() and p.pid}
