"""How long JupyterLab takes to answer after its process starts, with gpushift's start
hook (`gpushift_jupyter/server_start.py`: jsonschema's IRI grammar and other optional
format checkers deferred, JupyterLab's `node yarn.js config` started at once) against the
same server with only the format checkers deferred (`GPUSHIFT_PREFETCH_YARN_CONFIG=0`) and
with the hook turned off (both `=0`,
with `GPUSHIFT_DEFER_IRI_GRAMMAR=0`): the baseline, in the same run. `yarn noted` is the
hook in a home where an earlier start noted that JupyterLab cannot read this yarn's
output (every start of a notebook after its first, a move's included): no Node.js runs.
Runs rotate, each a
fresh `jupyter-lab` (with gpushift's server extension, as a pod starts it) in a fresh
home, timed from the process's start to the first 200 from `/api/status`, with the
server process's CPU (user + system, from /proc) read at that moment, and with it
that of its children it has waited for (`node yarn.js config` once JupyterLab took its
output: the CPU a pod's other containers and kernels do not get while the server
starts), steadier than the time on a shared machine; prints each run, the medians and
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

from gpushift_jupyter import yarn_config_prefetch

LAB = Path(sys.executable).with_name("jupyter-lab")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testing"))
from gpushift_testing.processes import cpu_seconds  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MODES = {"hook on": ("1", "1"), "yarn noted": ("1", "1"), "no prefetch": ("1", "0"),
         "hook off": ("0", "0")}
"""What each run sets: (GPUSHIFT_DEFER_IRI_GRAMMAR, GPUSHIFT_PREFETCH_YARN_CONFIG)."""


def note_yarn(home: str) -> None:
    """What the first start in `home` notes when this yarn's output is one JupyterLab
    cannot read (checked here: the mode is refused otherwise)."""
    found = yarn_config_prefetch.yarn_command()
    if found is None:
        raise SystemExit("no Node.js or yarn.js: JupyterLab runs no yarn command here")
    command, cwd = found
    output = subprocess.run(command, cwd=cwd, capture_output=True, check=True).stdout
    key = yarn_config_prefetch.program_key(command)
    if yarn_config_prefetch.readable_by_jupyterlab(output) or key is None:
        raise SystemExit("JupyterLab reads this yarn's output: nothing would be noted")
    yarn_config_prefetch.note_unreadable(key, f"{home}/.cache")
    if key not in yarn_config_prefetch.noted_unreadable(f"{home}/.cache"):
        raise SystemExit(f"could not note the yarn program in {home}/.cache")


def time_to_answer(mode: str) -> tuple[float, float, float]:
    """Seconds from starting `jupyter-lab` to its first answer from /api/status, and the
    CPU seconds its process used by then, alone and with its children."""
    port = free_port()
    grammar, prefetch = MODES[mode]
    with tempfile.TemporaryDirectory(prefix="gpushift-start-") as home:
        if mode == "yarn noted":
            note_yarn(home)
        env = dict(os.environ, HOME=home, JUPYTER_CONFIG_DIR=f"{home}/.jupyter",
                   XDG_CACHE_HOME=f"{home}/.cache",
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
                        return (time.monotonic() - started, cpu_seconds(server.pid),
                                cpu_seconds(server.pid, children=True))
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
    tree: dict[str, list[float]] = {mode: [] for mode in MODES}
    modes = list(MODES)
    for run in range(args.runs):
        for mode in modes[run % 4:] + modes[:run % 4]:  # rotate which goes first
            seconds, cpu_used, tree_used = time_to_answer(mode)
            times[mode].append(seconds)
            cpu[mode].append(cpu_used)
            tree[mode].append(tree_used)
            print(f"run {run + 1}: {mode:11} {seconds:5.2f} s, CPU {cpu_used:5.2f} s, "
                  f"with children {tree_used:5.2f} s")
    for what, values in (("answering after its start", times), ("CPU to its answer", cpu),
                         ("CPU with its children", tree)):
        medians = {mode: statistics.median(each) for mode, each in values.items()}
        base = medians["hook off"]
        print(f"JupyterLab {what}, median of {args.runs}: "
              + ", ".join(f"{mode} {m:.2f} s ({m / base:.2f}x)" for mode, m in medians.items())
              + " (baseline: hook off)")


if __name__ == "__main__":
    main()
