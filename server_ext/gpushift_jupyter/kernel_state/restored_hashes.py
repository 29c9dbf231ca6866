"""Kernel-side (sent to the kernel as the module `_gpushift_restored_hashes`, like
`agent`): kishu's IdGraphs of the variables a restore loaded, computed in a thread after
the restore has answered, so the user does not wait for them.

kishu decides at the next checkpoint which variables changed by comparing each one's
IdGraph (its hash) with the one taken here. A graph taken after a cell had already
changed a variable would match the changed variable, and that checkpoint would not store
the change. So the kernel's next execution — the held cell, a checkpoint, any operation
of the server's, silent ones included — first waits for the thread: an IPython
`pre_execute` callback, which runs before any code of an execution. Between the
restore's answer and that execution the kernel runs no user code, and the thread hashes
the variables as they were loaded. A move's held cell usually finds it done: the server
reports to the sidecar and answers the browser meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from IPython import get_ipython
from kishu.planning.idgraph import IdGraph

delay_s = 0.0
"""Tests only: how long the thread sleeps before it hashes (so that a test's cell is
sure to come while it runs)."""
waited_s: float | None = None
"""How long the first execution after the last restore waited for the thread (0.0:
it was done; None: no execution since)."""
# The running thread, with kishu's planner, the restored values and the names the
# thread could not hash (None: nothing to wait for).
_running: tuple[threading.Thread, Any, dict[str, Any], list[str]] | None = None


def start(planner: Any, values: dict[str, Any]) -> None:
    """Hash `values` (just restored, already in the user's namespace) into kishu's
    `planner` in a thread; the kernel's next execution waits for it (`wait`)."""
    global _running, waited_s  # noqa: PLW0603 - the module is the kernel's memory
    wait()  # (never two at once: an earlier restore's hashes are done first)
    events = get_ipython().events
    if wait not in events.callbacks["pre_execute"]:
        events.register("pre_execute", wait)
    failed: list[str] = []

    def hash_all() -> None:
        if delay_s:
            time.sleep(delay_s)
        for name, value in values.items():
            try:
                planner._id_graph_map[name] = IdGraph.from_object(value)
            except Exception:  # hashed again by `wait`, where an error shows
                failed.append(name)

    thread = threading.Thread(target=hash_all, name="gpushift-restored-hashes", daemon=True)
    _running = (thread, planner, values, failed)
    waited_s = None
    thread.start()


def wait() -> None:
    """Block until the restored variables are hashed (IPython's `pre_execute`)."""
    global _running, waited_s  # noqa: PLW0603
    if _running is None:
        return
    thread, planner, values, failed = _running
    started = time.monotonic()
    thread.join()
    _running = None
    waited_s = time.monotonic() - started
    for name in failed:
        # Once more in the kernel's own thread, before any code of this execution has
        # run: what raises here raised in the restore before the thread took it over.
        planner._id_graph_map[name] = IdGraph.from_object(values[name])
