"""Background checkpoints, INSIDE the notebook kernel (sent to the kernel as the module
`_gpushift_kishu_background`, like `agent`; the server drives it, `background`).

A checkpoint made in the kernel holds the kernel: a cell the user runs meanwhile waits
until kishu has hashed and stored the state. In the background that is not acceptable,
so the kernel forks: the child process is a copy-on-write snapshot of the kernel taken
while it is idle (a consistent state: no cell is running), makes kishu's commit from
it and exits; the kernel itself goes on at once. The user never waits on it: the
kernel is busy only for the fork (page tables: milliseconds; `fork_ms`).

The child runs no Jupyter machinery: the kernel's threads (ZeroMQ, output) are not
copied by fork, so it writes nothing to the kernel's streams (they go to /dev/null), it
only pickles, hashes and writes SQLite through fresh connections, and it leaves with
`os._exit`. Should memory run out, the kernel's cgroup OOM killer is asked to pick the
child first (`oom_score_adj` 1000). A kernel that has used CUDA is not forked (a CUDA
context does not survive fork): its checkpoints are made on a move or on demand.

The kernel's own kishu is not told about the child's commit: its next checkpoint (a
move's) stores what changed since its own previous checkpoint, as before — some
variables are stored twice, never too few (a restore reads the commit it is given).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import types
from typing import Any

import dill  # type: ignore[import-untyped,unused-ignore]

background: dict[str, Any] | None = None
"""The child at work (until collected): its pid, when it started, where it answers,
and the kernel's own last commit when it forked."""


def _agent() -> Any:
    return sys.modules["_gpushift_kishu"]


def state_bytes(namespace: dict[str, Any]) -> int:
    """A cheap estimate of the variables' size: the buffers of arrays, tensors and
    frames, looked for also in lists, tuples and dicts (two levels deep, the first
    thousand items each); the shallow size of anything else."""
    return sum(_size(value, 2) for name, value in list(namespace.items())
               if not name.startswith("_") and not isinstance(value, types.ModuleType))


def _size(value: Any, depth: int) -> int:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    memory = getattr(value, "memory_usage", None)
    if callable(memory) and type(value).__module__.startswith("pandas"):
        try:
            return int(memory(deep=False).sum())
        except Exception:  # noqa: S110 - an estimate: fall through
            pass
    size = sys.getsizeof(value, 0)
    if depth > 0 and isinstance(value, list | tuple | set | frozenset | dict):
        items = value.values() if isinstance(value, dict) else value
        for n, item in enumerate(items):
            if n >= 1000:
                break
            size += _size(item, depth - 1)
    return size


def _uses_cuda() -> bool:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return bool(cuda is not None and cuda.is_initialized())
    except Exception:
        return True  # cannot tell: do not fork


def start(max_state_bytes: int, result_path: str, notebook_path: str, database: str,
          settings: list[list[Any]]) -> None:
    """Attach kishu (idempotent), then fork a child that commits the kernel's state
    now; the child writes its answer to `result_path` (JSON, written whole) before it
    exits. One request: the kernel is busy as briefly as can be."""
    global background  # noqa: PLW0603 - the module is the kernel's memory
    agent = _agent()
    agent.attach(notebook_path, database, settings)
    if json.loads(agent.result)["status"] != "ok":
        return
    adopt_finished()
    if background is not None:
        agent._answer(status="ok", started=False, why="a background checkpoint is running")
        return
    kishu = agent._kishu_instance()
    if kishu is None:
        agent._answer(status="error", error="kishu is not attached in this kernel")
        return
    if _uses_cuda():
        agent._answer(status="ok", started=False, skipped=True,
                      why="the kernel uses CUDA, which a forked process cannot: its "
                          "state is saved on a move or on demand")
        return
    size = state_bytes(agent._ip().user_ns)
    if size > max_state_bytes:
        agent._answer(status="ok", started=False, skipped=True, state_bytes=size,
                      why=f"the variables take about {size / 2**20:.0f} MiB, more than the "
                          f"{max_state_bytes / 2**20:.0f} MiB background checkpoints are "
                          "made for: they are saved on a move or on demand")
        return
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _commit_in_child(kishu, result_path)
    fork_ms = (time.perf_counter() - started) * 1000
    background = {"pid": pid, "started": time.time(), "result": result_path,
                  "base": agent.own_head}
    agent._answer(status="ok", started=True, pid=pid, fork_ms=round(fork_ms, 3),
                  state_bytes=size)


def _commit_in_child(kishu: Any, result_path: str) -> None:
    global background  # noqa: PLW0603 - the parent's earlier child is not this one's
    background = None
    code = 1
    try:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - the process ends here
        sys.stdout = sys.stderr = devnull
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        agent = _agent()
        started = time.monotonic()
        agent.prepare_commit(kishu)
        cell = types.SimpleNamespace(
            execution_count=agent._ip().execution_count, error_before_exec=None,
            error_in_exec=None, result=None,
            info=types.SimpleNamespace(raw_cell="# gpushift background checkpoint"))
        commit_id = agent.finish_commit(kishu, cell)
        answer = {"status": "ok", "commit_id": commit_id,
                  "commit_s": round(time.monotonic() - started, 3)}
        try:  # what the kernel needs to base its next commit on this one
            with open(f"{result_path}.graphs", "wb") as f:
                dill.dump(kishu._cr_planner._id_graph_map, f)
        except Exception as exc:
            answer["graphs_error"] = f"{type(exc).__name__}: {exc}"
        code = 0
    except BaseException as exc:  # the child must end whatever happens
        answer = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    try:
        partial = f"{result_path}.{os.getpid()}"
        with open(partial, "w") as f:
            json.dump(answer, f)
        os.replace(partial, result_path)
    finally:
        os._exit(code)


def adopt_finished() -> None:
    """Once the child has ended: collect it (it stays a zombie until then) and, when it
    committed and the kernel made no commit of its own since the fork, take its commit
    as the kernel's own last one — with the variables' hashes as they were at the fork
    — so that the next checkpoint stores only what changed since (without this, each
    would store everything since the kernel's own last commit)."""
    global background
    if background is None:
        return
    try:
        pid, _ = os.waitpid(background["pid"], os.WNOHANG)
    except ChildProcessError:
        pid = background["pid"]
    if pid == 0:
        return
    finished, background = background, None
    result, graphs = finished["result"], f"{finished['result']}.graphs"
    try:
        with open(result) as f:
            answer = json.load(f)
        agent = _agent()
        kishu = agent._kishu_instance()
        if (answer.get("status") == "ok" and kishu is not None
                and agent.own_head == finished["base"] and os.path.exists(graphs)):
            with open(graphs, "rb") as f:
                # Written by this kernel's own child in the server's runtime folder.
                hashes = dill.load(f)  # noqa: S301
            commit_id = answer["commit_id"]
            kishu._cr_planner._id_graph_map = hashes
            kishu._variable_version_tracker.set_current(
                kishu._kishu_variable_version.get_variable_version_by_commit_id(commit_id))
            agent.own_head = commit_id
    except Exception:  # noqa: S110 - not adopted: the next commit stores more, that is all
        pass
    finally:
        for path in (result, graphs):
            with contextlib.suppress(OSError):
                os.unlink(path)


def cancel() -> None:
    """Stop the child now (a move needs the database): it is killed, and its write cut
    short is rolled back by the next writer (SQLite's hot journal)."""
    global background  # noqa: PLW0603
    agent = _agent()
    if background is None:
        agent._answer(status="ok", cancelled=False)
        return
    try:
        os.kill(background["pid"], signal.SIGKILL)
        os.waitpid(background["pid"], 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    background = None
    agent._answer(status="ok", cancelled=True)
