"""`hack/demo.py`, the README's main job, run as a user runs it: as a subprocess in its own
process group, stopped with Ctrl-C (SIGINT to the whole group, as a terminal sends it),
then a second run on the same state folder that reuses the built binaries and the
workspace, and stops by itself once the URL answers (--exit-after-ready)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from gpushift_testing.demo import READY_MARK
from gpushift_testing.kube import wait_for
from gpushift_testing.pod_processes import process_family, running

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "hack" / "demo.py"


class Demo:
    """The demo process with its output collected line by line."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(DEMO), "--state", str(state), "--port", "0", *args],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def url(self, timeout: float = 300) -> str:
        line = wait_for("the demo's URL", lambda: next(
            (x for x in self.lines if x.startswith(READY_MARK)), None) or self._exited(),
            timeout, interval=0.5, describe=lambda: self.output)
        return str(line).removeprefix(READY_MARK).strip()

    def _exited(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"demo exited {self.process.returncode}:\n{self.output}")

    def stopped(self, timeout: float) -> int:
        """The exit code once the demo exits; past `timeout`, a failure that shows where
        it hangs (every thread's stack, dumped by the demo on SIGUSR1) and what still runs."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            family = process_family(self.process.pid)
            os.kill(self.process.pid, signal.SIGUSR1)
            time.sleep(2)
            commands = [f"{pid}: {command_line(pid)}" for pid in family]
            log = self.state / "demo.log"
            raise AssertionError(
                f"demo still running {timeout:.0f}s after Ctrl-C:\n{self.output}\n"
                "its processes:\n" + "\n".join(commands) + "\ndemo.log:\n"
                + (log.read_text()[-6000:] if log.exists() else "(none)")) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def call(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(exited)"


def processes_mentioning(text: str) -> list[int]:
    """Processes of this machine whose command line or environment mention `text`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_demo_runs_until_ctrl_c_and_a_second_run_reuses_the_build_and_workspace(tmp_path):
    state = tmp_path / "demo-state"
    first = Demo(state)
    try:
        t0 = time.monotonic()
        url = first.url()
        ready_s = time.monotonic() - t0
        base, _, token = url.partition("lab?token=")
        assert base.endswith("/notebook/kubeflow-user/demo/") and len(token) == 32
        assert call(base + "api/status", token)[0] == 200
        # The user's work: a file on the workspace and a running kernel.
        call(base + "api/contents/notes.txt", token, "PUT",
             {"type": "file", "format": "text", "content": "mine"})
        assert call(base + "api/kernels", token, "POST", {"name": "python3"})[0] == 201
        started = process_family(first.process.pid)
        assert len(started) >= 9, started  # control plane, webhook, sidecar, jupyter, kernel
        os.killpg(first.process.pid, signal.SIGINT)  # Ctrl-C in the demo's terminal
        assert first.stopped(120) == 0, first.output
    finally:
        first.kill()
    assert "stopped: every process the demo started has exited." in first.output
    assert not [p for p in started if running(p)], first.output
    assert not processes_mentioning(str(state))
    print(f"\nfirst run: URL answered {ready_s:.1f}s after start")

    second = Demo(state, "--exit-after-ready")
    try:
        assert second.process.wait(300) == 0, second.output
    finally:
        second.kill()
    assert "binaries: already built" in second.output, second.output
    assert "kept from an earlier run" in second.output, second.output
    assert (state / "volumes" / "kubeflow-user" / "demo-workspace" / "notes.txt"
            ).read_text() == "mine"
    assert READY_MARK in second.output
    assert not processes_mentioning(str(state))
