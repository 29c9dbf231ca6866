"""How long JupyterLab takes to answer after its process starts, with gpushift's start
hook deferring jsonschema's IRI grammar (`gpushift_jupyter/server_start.py`) against the
same server with the hook turned off (`GPUSHIFT_DEFER_IRI_GRAMMAR=0`): the baseline, in
the same run. Runs alternate, each a fresh `jupyter-lab` (with gpushift's server
extension, as a pod starts it) in a fresh home, timed from the process's start to the
first 200 from `/api/status`; prints each run, the medians and their ratio.

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_answer(hook: bool) -> float:
    """Seconds from starting `jupyter-lab` to its first answer from /api/status."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gpushift-start-") as home:
        env = dict(os.environ, HOME=home, JUPYTER_CONFIG_DIR=f"{home}/.jupyter",
                   GPUSHIFT_DEFER_IRI_GRAMMAR="1" if hook else "0")
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
                        return time.monotonic() - started
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
    times: dict[bool, list[float]] = {True: [], False: []}
    for run in range(args.runs):
        for hook in (run % 2 == 0, run % 2 == 1):  # alternate which goes first
            seconds = time_to_answer(hook)
            times[hook].append(seconds)
            print(f"run {run + 1}: {'hook on ' if hook else 'hook off'} {seconds:5.2f} s")
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"\nJupyterLab answering after its start, median of {args.runs}: with the start "
          f"hook {on:.2f} s, without (baseline) {off:.2f} s, ratio {on / off:.2f}")


if __name__ == "__main__":
    main()
