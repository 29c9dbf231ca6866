"""Attach kishu to a kernel, checkpoint its state, restore it into another kernel.

See the package docstring for the decisions; `agent` is the code that runs in the
kernel, `kishu_patches` and `kishu_storage` how it changes and drives kishu there,
`snapshots` the loader it uses, `database` the server-side verification.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gpushift_jupyter.kernel_state.agent_settings import settings_json
from gpushift_jupyter.kernel_state.database import database_path, read_commit
from gpushift_jupyter.kernel_state.kernel_code import KernelCode, KernelStateError

AGENT_MODULE = "_gpushift_kishu"
SNAPSHOTS_MODULE = "_gpushift_kishu_snapshots"
PATCHES_MODULE = "_gpushift_kishu_patches"
STORAGE_MODULE = "_gpushift_kishu_storage"
BACKGROUND_MODULE = "_gpushift_kishu_background"
KISHU_IMPORT_MODULE = "_gpushift_kishu_import"
FORMAT_CHECKERS_MODULE = "_gpushift_format_checkers"
RESTORED_HASHES_MODULE = "_gpushift_restored_hashes"
AGENT_RESULT = f"__import__({AGENT_MODULE!r}).result"
"""The expression that reads the agent's answer to its last operation."""
CHECKPOINT_CELL = f"__import__({AGENT_MODULE!r}).checkpoint()"
"""The one recorded cell a checkpoint runs: kishu commits after it, as after any cell.
It costs the user one execution count and one history entry; it prints and returns
nothing and adds no variable."""
HELPER_TIMEOUT_S = 60.0
DEFAULT_CHECKPOINT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Checkpoint:
    commit_id: str
    database: Path
    verified_at: float
    """When the commit was verified complete in the database (epoch seconds)."""
    elapsed_ms: float
    database_bytes: int
    saved: tuple[str, ...] = ()
    """Variables in the checkpoint."""
    not_saved: tuple[tuple[str, str], ...] = ()
    """Variables kishu could not pickle, (name, reason): they will not come back."""


@dataclass(frozen=True)
class RestoreOutcome:
    ok: bool
    """True when every variable came back except those that cannot move between
    processes by design (open files, unpicklable objects), which are in
    `not_restored`; False when a saved variable failed to load (e.g. a module missing
    in this image) — the others came back all the same."""
    restored: tuple[str, ...]
    not_restored: tuple[tuple[str, str], ...]
    """(name, reason) for every variable that did not come back."""
    detail: str
    moved_to_cpu: tuple[str, ...] = ()
    """Variables holding torch tensors saved on a GPU, now on the CPU."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Where the kernel's time went: "import" (kishu imported, once per kernel, before
    the operation), "install" (the kernel-side modules' install, less that import, in
    the same operation or one before it: a new kernel's first), "attach" (kishu
    attached), "read" (the variables' chunks read from
    the database), "unpickle", "hash" (kishu's HEAD moved and the thread started that
    takes kishu's IdGraphs of the restored variables, what the next checkpoint needs to
    store only changes; the kernel's next execution waits for what is left of it:
    `restored_hashes.py`)."""


@dataclass(frozen=True)
class Preview:
    """What a checkpoint made now would not bring back (`preview`)."""

    unsaved: tuple[tuple[str, str], ...]
    """(name, reason): variables kishu cannot pickle, open files (never reopened)."""
    checked_all: bool
    """False when the budget ran out before every variable was looked at."""


def _source(module: str, package: str = __package__) -> str:
    return resources.files(package).joinpath(f"{module}.py").read_text()


@functools.cache
def install_expression() -> str:
    """An expression that makes the kernel-side modules importable in the kernel
    (idempotent): their sources travel compressed and are unpacked only when the kernel
    does not have these very versions yet (a digest of them is kept on the agent
    module). It goes with every operation as the first user expression, not as cell
    code: IPython tokenizes a cell's whole text before running it and ipykernel hashes
    it in pure Python, 15-20 ms for these 25 kB each time; an expression is only
    compiled (under 1 ms). The agent module keeps how long the install took
    (`installed_s`; a restore tells it)."""
    modules = [(FORMAT_CHECKERS_MODULE, _source("format_checkers", "gpushift_jupyter")),
               (KISHU_IMPORT_MODULE, _source("kishu_import")),
               (SNAPSHOTS_MODULE, _source("snapshots")),
               (STORAGE_MODULE, _source("kishu_storage")),
               (PATCHES_MODULE, _source("kishu_patches")),
               (RESTORED_HASHES_MODULE, _source("restored_hashes")),
               (AGENT_MODULE, _source("agent")),
               (BACKGROUND_MODULE, _source("background_agent"))]
    digest = hashlib.sha256(repr(modules).encode()).hexdigest()[:32]
    installer = (
        "import sys, time, types\n"
        "started = time.monotonic()\n"
        f"for name, source in {modules!r}:\n"
        "    if getattr(sys.modules.get(name), '__gpushift_source__', None) == source:\n"
        "        continue\n"
        "    module = types.ModuleType(name)\n"
        "    module.__gpushift_source__ = source\n"
        "    sys.modules[name] = module\n"
        "    exec(compile(source, '<' + name + '>', 'exec'), module.__dict__)\n"
        f"agent = sys.modules[{AGENT_MODULE!r}]\n"
        "agent.installed_s += time.monotonic() - started\n"
        f"agent.__gpushift_digest__ = {digest!r}\n")
    packed = base64.b85encode(zlib.compress(installer.encode(), 9)).decode()
    return (f"None if getattr(__import__('sys').modules.get({AGENT_MODULE!r}), "
            f"'__gpushift_digest__', None) == {digest!r} else "
            f"exec(__import__('zlib').decompress(__import__('base64').b85decode("
            f"{packed!r})).decode(), {{}})")


async def _op(kernel: KernelCode, name: str, timeout: float, **args: Any) -> dict[str, Any]:
    """Run one agent operation silently and return its JSON answer. The cell is empty:
    the install and the operation are user expressions, evaluated in order."""
    run_op = f"__import__({AGENT_MODULE!r}).run_op({name!r}, {json.dumps(args)!r})"
    done = await kernel.run("", timeout=timeout, record=False, expressions={
        "install": install_expression(), "answer": f"{run_op} or {AGENT_RESULT}"})
    return _answer(done.status, done.error, done.expressions.get("answer", ""), name)


def _answer(status: str, error: str, text: str, what: str) -> dict[str, Any]:
    if status != "ok" or not text:
        if "kishu" in error and "ModuleNotFoundError" in error:
            raise KernelStateError("kishu is not installed in this kernel's environment")
        raise KernelStateError(f"{what} failed in the kernel: {error or status}")
    answer: dict[str, Any] = json.loads(ast.literal_eval(text))
    if answer.get("status") != "ok":
        raise KernelStateError(f"{what} failed in the kernel: {answer.get('error', answer)}")
    return answer


async def attach(kernel: KernelCode, notebook_path: Path, *, workspace: Path,
                 timeout: float = HELPER_TIMEOUT_S) -> None:
    """Attach kishu to the kernel for `notebook_path` (absolute, on `workspace`).
    Idempotent; attached to another notebook or database (the notebook was renamed),
    kishu is attached again. Its database is `database.database_path` (the folder must
    exist; the file is created on first attach); never the notebook itself. No kishu
    hooks: cells run without kishu until a checkpoint."""
    await _op(kernel, "attach", timeout, notebook_path=_notebook(notebook_path),
              database=str(database_path(notebook_path, workspace)), settings=settings_json())


async def checkpoint(kernel: KernelCode, notebook_path: Path, *, workspace: Path,
                     timeout: float = DEFAULT_CHECKPOINT_TIMEOUT_S) -> Checkpoint:
    """Save the kernel's variables as a kishu commit and verify it complete in the
    database (commit present, no -journal) before returning. Only groups of variables
    that changed since the previous checkpoint are stored again."""
    started = time.monotonic()
    await attach(kernel, notebook_path, workspace=workspace, timeout=timeout)
    # The answer is read in the same request: user expressions are evaluated after the
    # cell and its post_run_cell hooks (kishu's commit), when the cell succeeded.
    done = await kernel.run(CHECKPOINT_CELL, timeout=timeout, record=True,
                            expressions={"answer": AGENT_RESULT})
    if done.status != "ok":
        raise KernelStateError(f"the checkpoint cell failed: {done.error or done.status}")
    answer = _answer(done.status, done.error, done.expressions.get("answer", ""), "checkpoint")
    commit_id = str(answer["commit_id"])
    facts = read_commit(database_path(notebook_path, workspace), commit_id)
    return Checkpoint(commit_id=commit_id, database=facts.db_path, verified_at=time.time(),
                      elapsed_ms=(time.monotonic() - started) * 1000,
                      database_bytes=facts.size_bytes, saved=facts.saved,
                      not_saved=facts.not_saved)


async def preview(kernel: KernelCode, *, budget_s: float = 5.0,
                  timeout: float = HELPER_TIMEOUT_S) -> Preview:
    """Before a move: which variables would not come back, each pickled as kishu would
    pickle it, writing nothing (the checkpoint itself records the exact list). Silent,
    no kishu attach needed; at most `budget_s` of pickling."""
    answer = await _op(kernel, "preview", timeout, budget_s=budget_s)
    return Preview(unsaved=tuple((str(n), str(r)) for n, r in answer["unsaved"]),
                   checked_all=bool(answer["checked_all"]))


async def restore(kernel: KernelCode, notebook_path: Path, commit_id: str | None, *,
                  workspace: Path, timeout: float = DEFAULT_CHECKPOINT_TIMEOUT_S) -> RestoreOutcome:
    """Load checkpoint `commit_id` (None: the latest) into the kernel, which is meant
    to be fresh. No cell is re-run; each group of variables loads on its own and one
    that fails is reported by name; tensors saved on a GPU load onto the CPU when the
    kernel has none. The database is checked read-only first: a missing, corrupt or
    busy database or an unknown commit raises KernelStateError and nothing is written.
    Neither the notebook nor a checkpoint is changed; kishu's HEAD moves to the
    commit, so that later checkpoints store only what changes."""
    database = database_path(notebook_path, workspace)
    facts = read_commit(database, commit_id)
    assert facts.commit_id is not None  # read_commit raises when there is none
    answer = await _op(kernel, "restore", timeout, notebook_path=_notebook(notebook_path),
                       database=str(database), commit_id=facts.commit_id,
                       settings=settings_json())
    not_restored = tuple((str(n), str(r)) for n, r in answer["not_restored"])
    restored = tuple(str(n) for n in answer["restored"])
    moved = tuple(str(n) for n in answer["moved_to_cpu"])
    failed = int(answer["failed_loads"])
    parts = [f"{len(restored)} variable(s) restored from checkpoint {facts.commit_id}"]
    if not_restored:
        parts.append(f"{len(not_restored)} not restored: "
                     + ", ".join(name for name, _ in not_restored))
    if moved:
        parts.append("saved on a GPU, now on the CPU: " + ", ".join(moved))
    return RestoreOutcome(ok=failed == 0, restored=restored, not_restored=not_restored,
                          detail="; ".join(parts), moved_to_cpu=moved,
                          seconds={str(k): float(v) for k, v in
                                   (answer.get("seconds") or {}).items()})


@dataclass(frozen=True)
class BackgroundStep:
    """Where a background checkpoint is (`background_start`, `background_outcome`)."""

    state: str
    """"started" (`pid`), "skipped" (`why`), "busy" (one is running), "running",
    "done" (`commit_id`), "failed" (`why`), "cancelled", "none"."""
    why: str = ""
    commit_id: str | None = None
    pid: int | None = None
    fork_ms: float | None = None
    """How long the kernel was busy forking (all the user could have waited)."""
    state_bytes: int | None = None
    commit_s: float | None = None
    """How long the child took to commit."""


async def background_start(kernel: KernelCode, notebook_path: Path, *, workspace: Path,
                           max_state_bytes: int, result_path: Path,
                           timeout: float = HELPER_TIMEOUT_S) -> BackgroundStep:
    """Attach kishu (idempotent), then fork the kernel, in one request: the child
    commits the state as it is now and writes its answer to `result_path`; the kernel
    goes on at once (`background_agent`)."""
    answer = await _op(kernel, "background_start", timeout,
                       max_state_bytes=max_state_bytes, result_path=str(result_path),
                       notebook_path=_notebook(notebook_path),
                       database=str(database_path(notebook_path, workspace)),
                       settings=settings_json())
    if answer.get("started"):
        return BackgroundStep("started", pid=int(answer["pid"]),
                              fork_ms=float(answer["fork_ms"]),
                              state_bytes=int(answer["state_bytes"]))
    return BackgroundStep("skipped" if answer.get("skipped") else "busy",
                          why=str(answer.get("why", "")),
                          state_bytes=answer.get("state_bytes"))


def background_outcome(result_path: Path, pid: int) -> BackgroundStep:
    """The child's answer once it wrote one, "running" while it lives, "failed" when
    it died without one (killed: out of memory, a move cancelled it). Read from the
    server, without the kernel (which may be running the user's cells)."""
    try:
        answer = json.loads(result_path.read_text())
    except FileNotFoundError:
        return (BackgroundStep("running", pid=pid) if _alive(pid) else
                BackgroundStep("failed", why="the background checkpoint's process ended "
                               "without a word (killed: out of memory, or cancelled)",
                               pid=pid))
    except (OSError, ValueError) as exc:
        return BackgroundStep("failed", why=f"its answer cannot be read: {exc}", pid=pid)
    if answer.get("status") != "ok":
        return BackgroundStep("failed", why=str(answer.get("error")), pid=pid)
    return BackgroundStep("done", commit_id=str(answer["commit_id"]), pid=pid,
                          commit_s=answer.get("commit_s"))


def _alive(pid: int) -> bool:
    """The process runs (a zombie, ended but not yet collected by the kernel, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X", "x")


async def background_cancel(kernel: KernelCode, *,
                            timeout: float = HELPER_TIMEOUT_S) -> BackgroundStep:
    answer = await _op(kernel, "background_cancel", timeout)
    return BackgroundStep("cancelled" if answer.get("cancelled") else "none")


@dataclass(frozen=True)
class KernelHistory:
    cells_run: int
    """Cells this kernel process ran that count in its history (the user's, and
    gpushift's checkpoint cell); 0 for a fresh or restarted kernel."""
    restored_commit: str | None
    """The checkpoint gpushift restored into this process, if any."""
    pid: int = 0
    """The kernel's process (a restarted kernel is another one)."""


async def kernel_history(kernel: KernelCode, *, timeout: float = 5.0) -> KernelHistory:
    """What this kernel process has done so far, asked silently (nothing recorded,
    nothing installed): whether it is fresh enough to restore a checkpoint into."""
    done = await kernel.run("", timeout=timeout, record=False, expressions={
        "count": "get_ipython().execution_count",
        "pid": "__import__('os').getpid()",
        "restored": f"getattr(__import__('sys').modules.get({AGENT_MODULE!r}), "
                    "'restored_commit', None)"})
    if done.status != "ok":
        raise KernelStateError(f"the kernel did not say what it ran: {done.error}")
    try:
        count = int(done.expressions.get("count", ""))
        pid = int(done.expressions.get("pid", "0"))
        restored = ast.literal_eval(done.expressions.get("restored", "None"))
    except (ValueError, SyntaxError):
        raise KernelStateError("the kernel's answer about what it ran is not readable"
                               ) from None
    return KernelHistory(cells_run=max(0, count - 1),
                         restored_commit=restored if isinstance(restored, str) else None,
                         pid=pid)


def _notebook(notebook_path: Path) -> str:
    if not notebook_path.is_absolute():
        raise KernelStateError(f"the notebook path must be absolute, not {notebook_path}")
    return str(notebook_path)
