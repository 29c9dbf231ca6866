"""How long JupyterLab takes to answer after its process starts, with gpushift's start
hook (`gpushift_jupyter/server_start.py`: jsonschema's IRI grammar and other optional
format checkers deferred, JupyterLab's `node yarn.js config` started at once) against the
same server with only the format checkers deferred (`GPUSHIFT_PREFETCH_YARN_CONFIG=0`) and
with the hook turned off (both `=0`,
with `GPUSHIFT_DEFER_IRI_GRAMMAR=0`): the baseline, in the same run. Runs rotate, each a
fresh `jupyter-lab` (with gpushift's server extension, as a pod starts it) in a fresh
home, timed from the process's start to the first 200 from `/api/status`, with the
server process's CPU (user + system, from /proc; not its `node` child) read at that
moment, steadier than the time on a shared machine; prints each run, the medians and
their ratios to the baseline.

    .venv/bin/python bench/server_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LAB = Path(sys.executable).with_name("jupyter-lab")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testing"))
from gpushift_testing.processes import cpu_seconds  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MODES = {"hook on": ("1", "1"), "no prefetch": ("1", "0"), "hook off": ("0", "0")}
"""What each run sets: (GPUSHIFT_DEFER_IRI_GRAMMAR, GPUSHIFT_PREFETCH_YARN_CONFIG)."""


def time_to_answer(mode: str) -> tuple[float, float]:
    """Seconds from starting `jupyter-lab` to its first answer from /api/status, and the
    CPU seconds its process used by then."""
    port = free_port()
    grammar, prefetch = MODES[mode]
    with tempfile.TemporaryDirectory(prefix="gpushift-start-") as home:
        env = dict(os.environ, HOME=home, JUPYTER_CONFIG_DIR=f"{home}/.jupyter",
                   GPUSHIFT_DEFER_IRI_GRAMMAR=grammar,
                   GPUSHIFT_PREFETCH_YARN_CONFIG=prefetch)
        started = time.monotonic()
        server = subprocess.Popen(
            [str(LAB), "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             "--IdentityProvider.token=bench", f"--ServerApp.root_dir={home}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = started + 60
            while time.monotonic() < deadline:
                if server.poll() is not None:
                    raise RuntimeError(f"jupyter-lab exited with {server.returncode}")
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/api/status?token=bench", timeout=1):
                        return time.monotonic() - started, cpu_seconds(server.pid)
                except OSError:
                    time.sleep(0.02)
            raise RuntimeError("jupyter-lab did not answer within 60 s")
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    modes = list(MODES)
    for run in range(args.runs):
        for mode in modes[run % 3:] + modes[:run % 3]:  # rotate which goes first
            seconds, cpu_used = time_to_answer(mode)
            times[mode].append(seconds)
            cpu[mode].append(cpu_used)
            print(f"run {run + 1}: {mode:11} {seconds:5.2f} s, CPU {cpu_used:5.2f} s")
    for what, values in (("answering after its start", times), ("CPU to its answer", cpu)):
        medians = {mode: statistics.median(each) for mode, each in values.items()}
        base = medians["hook off"]
        print(f"JupyterLab {what}, median of {args.runs}: "
              + ", ".join(f"{mode} {m:.2f} s ({m / base:.2f}x)" for mode, m in medians.items())
              + " (baseline: hook off)")


if __name__ == "__main__":
    main()
