"""A warm kernel process (see `warm_kernels`): `python -m gpushift_jupyter.warm_kernel_main
SECONDS`. Imports what every kernel of a move imports first — ipykernel with its
debugger, and the libraries kishu imports (`PRELOAD`: pandas, nbformat, networkx...), at
a lower priority than the server's start (`NICER_BY`) — then waits on stdin for one
line: the kernel's `{"argv", "env", "cwd"}`. It takes that environment and folder
and runs ipykernel as `python -m ipykernel_launcher ARGV` would. End of input, or nothing
within SECONDS: it ends, and no kernel was ever there.

kishu itself and gpushift's kernel-side modules are not imported here: they are installed
by the kernel's first operation, as in any kernel (server_ext/README.md, "Warm kernels",
says what happened when they were).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import select
import sys
import threading
from pathlib import Path

PRELOAD = ("numpy", "pandas", "dill", "xxhash", "sqlite3", "nbformat", "networkx",
           "ipykernel.debugger", "psutil", "pdb")
"""What kishu's import in the kernel spends most of its time on (pandas alone about
0.36 s, nbformat 0.13 s, networkx 0.10 s; `python -X importtime`), and what ipykernel
imports as it makes the kernel, once the order came: its debugger (debugpy's pydevd,
0.05 s of the kernel's 0.13 s `initialize`), psutil, pdb."""
AT_OWN_PRIORITY = ("numpy",)
"""Imported first, in the main thread at the process's priority: numpy's OpenBLAS starts
its worker threads as it loads, and a thread keeps the nice value of the thread that
started it, for the kernel's whole life."""
NICER_BY = 10
"""How much lower (Linux nice) the other imports run than the server: they take the CPU
JupyterLab's start leaves idle instead of competing with it (total 3.84 -> 3.60 s p50
of 18 interleaved moves; server_ext/README.md). Only their own thread, which
ends before the kernel starts: the kernel's threads run at the server's priority."""


def _wait_for_order(seconds: float) -> dict[str, object] | None:
    ready, _, _ = select.select([sys.stdin.buffer], [], [], seconds)
    line = sys.stdin.buffer.readline() if ready else b""
    order = json.loads(line) if line.strip() else None
    return order if isinstance(order, dict) else None


def _preload_nicer() -> None:
    with contextlib.suppress(OSError):  # no lower priority: the imports still run
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, 0) + NICER_BY)
    import ipykernel.kernelapp  # noqa: F401, PLC0415 - after the path is set

    from gpushift_jupyter import format_checkers  # noqa: PLC0415

    # nbformat imports jsonschema, whose format checkers are imported at their first use
    # (as in the server and in kishu's import in a kernel).
    checkers = format_checkers.defer()
    try:
        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    finally:
        if checkers:
            format_checkers.release()


def main(seconds: float) -> int:
    # As ipykernel_launcher: the folder the program started in is not on sys.path while
    # ipykernel loads (InteractiveShellApp.init_path adds the kernel's own back).
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    before = dict(os.environ)
    for name in AT_OWN_PRIORITY:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    preloading = threading.Thread(target=_preload_nicer, name="gpushift-warm-preload")
    preloading.start()
    preloading.join()
    # Imported by then (here, should the thread have failed: the error is the kernel's).
    from ipykernel import kernelapp  # noqa: PLC0415 - after the path is set

    # What the imports set in the environment (as they would have in the kernel), kept.
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
    order = _wait_for_order(seconds)
    if order is None:
        return 0
    env, cwd, argv = order["env"], order["cwd"], order["argv"]
    assert isinstance(env, dict) and isinstance(cwd, str) and isinstance(argv, list)
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(set_by_imports)
    os.chdir(cwd)
    spec = importlib.util.find_spec("ipykernel_launcher")
    sys.argv = [spec.origin if spec and spec.origin else "ipykernel_launcher", *argv]
    # ipykernel read JPY_PARENT_PID when it was imported, before this environment: say it
    # on the command line (the kernel then ends with the server, as a cold one does).
    parent = str(env.get("JPY_PARENT_PID") or "")
    if parent.isdigit():
        sys.argv.append(f"--IPKernelApp.parent_handle={parent}")
    kernelapp.launch_new_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 300.0))
