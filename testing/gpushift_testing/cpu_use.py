"""Who used the machine's CPU over a stretch of time, by part of the system (Linux /proc):
a bench's profile of a move on the local control plane, where every part (control
plane, pod runner, sidecars, JupyterLab, kernels) shares this machine's few cores.

A thread samples every process's user + system CPU time every `period` seconds; `used`
then sums, per part, what each process used between two moments (a process that ended
in between counts up to its last sample). The sampling itself costs a few per cent of a
core: a bench turns it on with an option.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from pathlib import Path

from gpushift_testing.processes import cpu_of, proc_stat

PARTS = (
    ("kernels", ("ipykernel_launcher", "warm_kernel_main")),
    ("JupyterLab", ("jupyter-lab", "jupyter lab", "jupyter-server", "jupyterhub-singleuser")),
    ("sidecars", ("gpushift-sidecar",)),
    ("webhook", ("gpushift-webhook",)),
    ("control plane", ("kube-apiserver", "etcd", "kube-controller-manager",
                       "kube-scheduler", "notebook-controller", "kwok")),
)
"""Each part and what its processes' command lines contain (the first match wins)."""
OWN = "bench"
"""The sampling process itself: the bench acting as the browser, with the local pod
runner and the notebook proxy in its threads."""
OTHER = "other"


def part_of(cmdline: str, pid: int, own_pid: int,
            parts: tuple[tuple[str, tuple[str, ...]], ...] = PARTS) -> str:
    """The part a process belongs to, from its command line (pure)."""
    if pid == own_pid:
        return OWN
    for part, marks in parts:
        if any(mark in cmdline for mark in marks):
            return part
    return OTHER


class CpuSampler:
    """Samples every process's CPU time in a thread of its own until `stop`."""

    def __init__(self, period: float = 0.1,
                 parts: tuple[tuple[str, tuple[str, ...]], ...] = PARTS) -> None:
        self.period, self.parts = period, parts
        self._times: list[float] = []
        # A process is its pid and its start time: pids are reused within a run.
        self._samples: list[dict[tuple[int, str], float]] = []
        self._parts: dict[tuple[int, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._sample()
            self._samples.append(sample)
            self._times.append(time.time())
            self._stop.wait(self.period)

    def _sample(self) -> dict[tuple[int, str], float]:
        sample: dict[tuple[int, str], float] = {}
        own = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                fields = proc_stat(pid)
                key = (pid, fields[19])  # starttime
                if key not in self._parts:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    self._parts[key] = part_of(cmdline.replace(b"\0", b" ").decode(
                        errors="replace"), pid, own, self.parts)
            except OSError:  # it ended meanwhile
                continue
            sample[key] = cpu_of(fields)
        return sample

    def used(self, since: float, until: float) -> dict[str, float]:
        """CPU seconds each part used from `since` to `until` (epoch seconds, to the
        nearest samples), with "total"."""
        first = max(0, bisect.bisect_left(self._times, since) - 1)
        last = min(len(self._times) - 1, bisect.bisect_left(self._times, until))
        if last <= first:
            return {"total": 0.0}
        window = self._samples[first:last + 1]
        # Each process's CPU at its last sample in the window, less that at the first (0
        # for one that started in the window).
        latest: dict[tuple[int, str], float] = {}
        for sample in window:
            latest.update(sample)
        used: dict[str, float] = {}
        for key, end in latest.items():
            part = self._parts.get(key, OTHER)
            used[part] = used.get(part, 0.0) + end - window[0].get(key, 0.0)
        used["total"] = sum(used.values())
        return used
