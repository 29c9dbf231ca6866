"""What gpushift does as a Jupyter server process starts, before jupyter_server is
imported: the IRI grammar jupyter_events' jsonschema would build at import is built at
its first use instead, and jsonschema's other optional format checkers are imported at
theirs (`format_checkers`): JupyterLab answered in 1.07 s instead of 2.24 s on every pod
start with the grammar alone (`bench/server_start.py`, 5 alternating runs on a 2-core
machine);
and JupyterLab's `node yarn.js config` starts at once, beside the server's imports,
instead of in the middle of them (`yarn_config_prefetch`); and on a pod a move is
arriving at, the kernels its restore will start are warmed beside the server's start
(`warm_kernels`).

Run by the one-line `gpushift_jupyter_server_start.pth` the package installs into
site-packages, in every Python process of the environment; the line only imports this
module when the program's name starts with "jupyter-" or "jupyterhub-" (not in the
`jupyter` launcher, which execs `jupyter-lab`), and `run` acts only for the Jupyter
server commands (`SERVER_COMMANDS`), never for kernels, `pip` or the user's scripts.
`GPUSHIFT_DEFER_IRI_GRAMMAR=0` in the server's environment turns the first off,
`GPUSHIFT_PREFETCH_YARN_CONFIG=0` the second, `GPUSHIFT_WARM_KERNELS=0` the third.
"""

from __future__ import annotations

import contextlib
import os

from gpushift_jupyter import format_checkers, warm_kernels, yarn_config_prefetch

SERVER_COMMANDS = frozenset({"jupyter-lab", "jupyter-server", "jupyter-notebook",
                             "jupyterhub-singleuser"})
"""Programs (`sys.argv[0]`'s name) that start a Jupyter server: `jupyter lab` runs
`jupyter-lab`, as Kubeflow's notebook images do."""

OPT_OUT_ENV = "GPUSHIFT_DEFER_IRI_GRAMMAR"
PREFETCH_OPT_OUT_ENV = "GPUSHIFT_PREFETCH_YARN_CONFIG"


def is_jupyter_server(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) in SERVER_COMMANDS


def run(argv: list[str]) -> bool:
    """Defer jsonschema's format checkers and start the yarn config when `argv` starts a
    Jupyter server; whether the IRI grammar was deferred. Never raises: a failure here
    must not keep the server from starting."""
    if not is_jupyter_server(argv):
        return False
    # Whatever fails here, the server starts as it would without gpushift (the grammar
    # built at import, JupyterLab running its yarn command itself).
    deferred = False
    if os.environ.get(OPT_OUT_ENV, "1") != "0":
        with contextlib.suppress(Exception):
            deferred = format_checkers.IRI_GRAMMAR in format_checkers.defer()
    if os.environ.get(PREFETCH_OPT_OUT_ENV, "1") != "0":
        with contextlib.suppress(Exception):
            yarn_config_prefetch.start()
    # Once: site runs the .pth twice in a virtual environment whose lib64 links to lib.
    if not warm_kernels.started_count:
        with contextlib.suppress(Exception):  # GPUSHIFT_WARM_KERNELS=0 turns it off
            warm_kernels.start_for_arriving_move()
    return deferred
