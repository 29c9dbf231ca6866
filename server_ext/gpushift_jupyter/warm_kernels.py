"""Kernel processes started before they are asked for, when a move arrives: a new pod's
restore waits for its kernel's start (Python, ipykernel: about 0.45 s) and kishu's
import in it (about 0.5 s) before a single variable comes back. When the server starts
on a pod a move is arriving at, one warm process per notebook of the move starts beside
the server's own start (`start_for_arriving_move`, from the start hook): it imports
ipykernel and installs gpushift's kernel-side modules (kishu with them), then waits.
The server's kernel start then hands a waiting process its command line, environment
and folder instead of starting Python (`gpushift_jupyter.warm_provisioner`), and that
process becomes the kernel: the same program as `python -m ipykernel_launcher` runs,
in the same process group arrangement, so interrupts, restarts and shutdowns are
jupyter_client's own.

A warm process is used only for exactly the kernel it would have been (`cold_reason`):
`python -m ipykernel_launcher` of this very interpreter, an environment that differs
from the one the process started with only in what jupyter_client and jupyter_server
add per kernel (`PER_KERNEL_ENV`: a module imported early could have read any other
variable), no redirected streams. Anything else starts as without gpushift. An unused
process ends by itself after `WARM_SECONDS`, or at once when the server goes (its
stdin closes).

Only the standard library here: the start hook imports this module before the server's
own imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPT_OUT_ENV = "GPUSHIFT_WARM_KERNELS"
"""`0` in the server's environment: no warm kernels."""
WARM_SECONDS = 300.0
"""How long an unused warm process waits before it ends (a restore starts its kernels
within seconds of the server's start; a move whose restore never comes leaves no
process behind)."""
MAX_WARM = 4
"""At most this many warm processes (one per notebook of the move)."""
ARRIVING_PHASES = frozenset({"recreating", "restoring"})
"""Phases of the sidecar's migration record in which this pod is the move's new pod."""
PER_KERNEL_ENV = ("JPY_",)
"""Prefixes of the variables jupyter_client and jupyter_server set per kernel
(`JPY_PARENT_PID`, `JPY_SESSION_NAME`): set before the kernel runs, read by nothing at
import."""
MAIN_MODULE = "gpushift_jupyter.warm_kernel_main"


@dataclass
class WarmKernel:
    """One waiting process."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    """The environment it started with (the server's)."""
    executable: str
    started: float
    """time.monotonic() at its start."""
    seconds: float = WARM_SECONDS
    """It ends by itself this long after its start, unused."""

    def alive(self, now: float) -> bool:
        # Not offered in its last seconds: it could end as it is told to be a kernel.
        return self.process.poll() is None and now - self.started < self.seconds - 5


_pool: list[WarmKernel] = []
_lock = threading.Lock()
started_count = 0
"""How many warm processes this server started (0: none, the provisioner stays out)."""


def arriving_notebooks(runtime_config: Mapping[str, Any]) -> int:
    """How many notebooks a move arriving at this pod restores (0: no move arrives),
    from the sidecar's runtime-config.json (pure)."""
    if runtime_config.get("optimizerOff"):
        return 0
    migration = runtime_config.get("migration")
    if not isinstance(migration, dict) or migration.get("phase") not in ARRIVING_PHASES:
        return 0
    # The sidecar's count of the move's checkpoints (an older sidecar's file has none:
    # one, the notebook that asked).
    notebooks = migration.get("notebooks", 1)
    if not isinstance(notebooks, int) or isinstance(notebooks, bool) or notebooks < 1:
        return 0
    return min(MAX_WARM, notebooks)


def cold_reason(cmd: Sequence[str], env: Mapping[str, str] | None, kwargs: Mapping[str, Any],
                warm_env: Mapping[str, str], executable: str) -> str | None:
    """Why the kernel `cmd` (with jupyter_client's launch keywords) must start as it
    would without gpushift instead of in a warm process; None: a warm one is it (pure)."""
    if list(cmd[:3]) != [executable, "-m", "ipykernel_launcher"]:
        return f"not this Python's ipykernel_launcher: {list(cmd[:3])}"
    for key in ("stdin", "stdout", "stderr", "preexec_fn", "pass_fds"):
        if kwargs.get(key) is not None:
            return f"the launch sets {key}"
    if kwargs.get("independent"):
        return "an independent kernel"
    if env is None:
        return None
    differ = sorted(
        key for key in set(env) | set(warm_env)
        if env.get(key) != warm_env.get(key) and not key.startswith(PER_KERNEL_ENV))
    if differ:
        return f"its environment differs in {', '.join(differ[:5])}"
    return None


def start(count: int, environ: Mapping[str, str] | None = None,
          seconds: float = WARM_SECONDS) -> int:
    """Start `count` warm processes (fewer when some fail to start), each ending by itself
    after `seconds` unused; how many started."""
    global started_count  # noqa: PLW0603 - the pool is this server process's
    env = dict(os.environ if environ is None else environ)
    started = 0
    for _ in range(min(count, MAX_WARM)):
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", MAIN_MODULE, str(seconds)], stdin=subprocess.PIPE,
                env=env, start_new_session=True)
        except OSError:
            break
        with _lock:
            _pool.append(WarmKernel(process, env, sys.executable, time.monotonic(), seconds))
        started += 1
    started_count += started
    return started


def start_for_arriving_move(environ: Mapping[str, str] | None = None) -> int:
    """From the start hook: warm processes for the notebooks of a move arriving at this
    pod, as the sidecar's runtime-config.json tells; how many started."""
    environ = os.environ if environ is None else environ
    runtime_dir = environ.get("GPUSHIFT_RUNTIME_DIR")
    if environ.get(OPT_OUT_ENV, "1") == "0" or not runtime_dir:
        return 0
    try:
        document = json.loads((Path(runtime_dir) / "runtime-config.json").read_bytes())
    except (OSError, ValueError):
        return 0
    count = arriving_notebooks(document) if isinstance(document, dict) else 0
    return start(count, environ) if count else 0


def claim(cmd: Sequence[str],
          kwargs: Mapping[str, Any]) -> tuple[subprocess.Popen[bytes] | None, str]:
    """A waiting process made the kernel `cmd` (told its command line, environment and
    folder), or None and why not."""
    env = kwargs.get("env")
    now = time.monotonic()
    with _lock:
        _pool[:] = [w for w in _pool if w.alive(now) or _reap(w)]
        if not _pool:
            return None, "no warm kernel waiting"
        reason = cold_reason(cmd, env, kwargs, _pool[0].env, _pool[0].executable)
        if reason is not None:
            return None, reason
        warm = _pool.pop(0)
    # As jupyter_client's launcher adds it: the kernel ends when the server is gone.
    kernel_env = {**(env if env is not None else warm.env), "JPY_PARENT_PID": str(os.getpid())}
    order = {"argv": list(cmd[3:]), "env": kernel_env,
             "cwd": str(kwargs.get("cwd") or os.getcwd())}
    try:
        assert warm.process.stdin is not None
        warm.process.stdin.write(json.dumps(order).encode() + b"\n")
        warm.process.stdin.close()
    except OSError as exc:  # it ended meanwhile: start as usual
        _reap(warm)
        return None, f"the warm kernel ended: {exc}"
    return warm.process, ""


def _reap(warm: WarmKernel) -> bool:
    """End a warm process that is no longer offered (False: drop it from the pool)."""
    with contextlib.suppress(OSError):
        if warm.process.stdin is not None:
            warm.process.stdin.close()  # it ends itself on end of input
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        warm.process.wait(timeout=0)  # reaped if it ended already
    return False


def reap() -> None:
    """Collect the warm processes that ended unused (their time is up): no zombies."""
    now = time.monotonic()
    with _lock:
        _pool[:] = [w for w in _pool if w.alive(now) or _reap(w)]


def discard_all() -> None:
    """End every waiting process (tests; the server's shutdown closes their input)."""
    with _lock:
        pool, _pool[:] = list(_pool), []
    for warm in pool:
        _reap(warm)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            warm.process.wait(timeout=10)
