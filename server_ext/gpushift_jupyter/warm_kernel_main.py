"""A warm kernel process (see `warm_kernels`): `python -m gpushift_jupyter.warm_kernel_main
SECONDS`. Imports what every kernel of a move imports first — ipykernel, and the
libraries kishu imports (`PRELOAD`: pandas, nbformat, networkx...) — then waits on stdin
for one line: the kernel's `{"argv", "env", "cwd"}`. It takes that environment and folder
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
from pathlib import Path

PRELOAD = ("numpy", "pandas", "dill", "xxhash", "sqlite3", "nbformat", "networkx")
"""What kishu's import in the kernel spends most of its time on (pandas alone about
0.36 s, nbformat 0.13 s, networkx 0.10 s; `python -X importtime`)."""


def _wait_for_order(seconds: float) -> dict[str, object] | None:
    ready, _, _ = select.select([sys.stdin.buffer], [], [], seconds)
    line = sys.stdin.buffer.readline() if ready else b""
    order = json.loads(line) if line.strip() else None
    return order if isinstance(order, dict) else None


def main(seconds: float) -> int:
    # As ipykernel_launcher: the folder the program started in is not on sys.path while
    # ipykernel loads (InteractiveShellApp.init_path adds the kernel's own back).
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    before = dict(os.environ)
    from ipykernel import kernelapp  # noqa: PLC0415 - after the path is set

    from gpushift_jupyter import iri_grammar  # noqa: PLC0415

    # nbformat imports jsonschema, whose IRI grammar is built at its first use instead
    # (as in the server and in kishu's import in a kernel).
    grammar = iri_grammar.defer()
    try:
        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    finally:
        if grammar:
            iri_grammar.release()
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
