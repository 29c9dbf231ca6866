"""The part of the kishu driver that runs INSIDE the notebook kernel.

The server extension never imports this module to use it: it sends this file's source to
the kernel, which executes it as the module `_gpushift_kishu` (a `sys.modules` entry, so
nothing is added to the user's namespace; see `driver.install_expression`). Each operation
stores a JSON answer in `result`, which the server reads back with a silent execution's
`user_expressions`. No operation raises into the kernel.

kishu 0.3.4 internals used here (all from `kishu.jupyterint.KishuForJupyter`, its
planner `CheckpointRestorePlanner`, and `kishu.storage`):
- `KishuForJupyter(NotebookId, ip)` is built directly instead of `init_kishu()`, because
  `init_kishu` rewrites the user's .ipynb (it stores `metadata.kishu` with a session
  counter) and asks a browser front end which platform it runs on (ipylab).
- The user namespace is NOT replaced. kishu's constructor swaps `ip.user_ns` for a
  tracking copy; functions defined before that keep the old dict as their globals (they
  then see stale variables), and dill pickles the whole namespace into every function
  whose globals are not `__main__.__dict__`. `_LiveNamespace` gives kishu a view of the
  real namespace instead.
- Hooks are NOT installed: kishu commits only when `checkpoint()` runs (pre_run_cell,
  then post_run_cell on the cell that called it: kishu's own automatic-commit path).
  Cells in between run without kishu's per-cell pickling and hashing. Every variable
  counts as accessed at a checkpoint, and `_pre_run_cell_vars` is set to the variables
  of the previous checkpoint, so kishu's change detection (IdGraph hashes) decides which
  groups of variables changed since then; unchanged ones are not stored again.
- A restore never uses kishu's checkout/RestorePlan: that re-runs cells (with their side
  effects on files), aborts on the first variable that fails to load, and rewrites the
  notebook. It reads the commit's variable snapshots itself (read-only), unpickles each
  group on its own with `SafeUnpickler`, then moves kishu's HEAD to the commit
  (`KishuCommitGraph.jump`, `KishuBranch.update_head`) so later checkpoints stay
  incremental.
"""

from __future__ import annotations

import gc
import io
import json
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dill  # type: ignore[import-untyped,unused-ignore]
from IPython import get_ipython
from kishu import jupyterint
from kishu.jupyter.namespace import Namespace
from kishu.jupyter.runtime import JupyterRuntimeEnv
from kishu.notebook_id import NotebookId

VERSION = "1"
result = ""
"""JSON answer of the last operation (read by the server with `user_expressions`)."""
own_head: str | None = None
"""The commit this kernel's kishu last made or restored (None since it attached).
kishu bases a commit on the database's HEAD, which other writers move too (a
background checkpoint's child, another kernel of the same notebook): each commit is
based on this kernel's own last one instead (`_align_head`)."""
installed_s = 0.0
"""Seconds the kernel-side modules' install took in this kernel (`driver.install_expression`
adds to it; set after this module ran), kishu's import included; the next restore
tells it, once."""
restored_commit: str | None = None
"""The checkpoint restored into this kernel process, if any (a restarted kernel is a
new process: None again). With the execution count, whether a "resume" may be offered."""

def _answer(**fields: Any) -> None:
    global result  # noqa: PLW0603 - the module is the kernel-side mailbox
    result = json.dumps(fields)


def run_op(name: str, args_json: str) -> None:
    """Run one operation (`attach`, `prepare_checkpoint`, `restore`); never raises."""
    try:
        _OPS[name](**json.loads(args_json))
    except Exception as exc:
        _answer(status="error", error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(limit=8))


def _patches() -> Any:
    return sys.modules["_gpushift_kishu_patches"]


def _storage() -> Any:
    return sys.modules["_gpushift_kishu_storage"]


def _ip() -> Any:
    return get_ipython()


def _kishu_instance() -> Any:
    kishu = _ip().user_ns.get("_kishu")
    if kishu is None:
        return None
    if not getattr(kishu, "_gpushift", False):
        raise RuntimeError("kishu was attached by hand in this kernel (init_kishu); restart "
                           "the kernel so that gpushift can attach it")
    return kishu


def attach(notebook_path: str, database: str, settings: list[list[Any]]) -> None:
    """Attach kishu to the notebook without hooks, namespace swap or notebook write.
    Attached already to another notebook or database (the notebook was renamed or
    moved, and its database with it): attached again, to the new ones."""
    _patches().apply_patches(settings)
    current = _kishu_instance()
    if current is not None:
        if (str(current._notebook_id.path()) == notebook_path
                and str(current.database_path()) == database):
            _answer(status="ok", already=True)
            return
        del _ip().user_ns["_kishu"]
    global own_head  # noqa: PLW0603
    own_head = None  # kishu resets the database's HEAD when it attaches
    ip = _ip()
    path = Path(notebook_path)
    notebook_id = NotebookId(key=path.stem, path=path,
                             kernel_id=JupyterRuntimeEnv.enclosing_kernel_id())
    platform = jupyterint.enclosing_platform
    jupyterint.enclosing_platform = lambda: "jupyterlab"  # no ipylab round trip
    ip.init_create_namespaces = lambda **_: None  # keep the user's namespace object
    try:
        # kishu's database in the workspace's hidden folder, not beside the notebook.
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        _patches().place_database(notebook_path, database)
        kishu = jupyterint.KishuForJupyter(notebook_id, ip=ip)
    finally:
        jupyterint.enclosing_platform = platform
        del ip.init_create_namespaces
    kishu._user_ns._tracked_namespace = _patches().LiveNamespace(ip.user_ns)
    kishu._gpushift = True  # type: ignore[attr-defined]

    def notebook_cells() -> Any:
        # kishu copies the notebook's cells into each commit; a notebook that cannot be
        # read at that moment (being saved, not on disk) must not fail a checkpoint.
        try:
            return type(kishu)._all_notebook_cells(kishu)
        except Exception:
            return None, []

    kishu._all_notebook_cells = notebook_cells  # type: ignore[method-assign]
    ip.user_ns["_kishu"] = kishu
    _answer(status="ok", already=False)


def checkpoint() -> None:
    """Called by the recorded cell: kishu's pre_run_cell now, its post_run_cell (the
    automatic commit) after the cell; `result` says how it went. Never raises."""
    try:
        _arm_checkpoint()
    except Exception as exc:
        _answer(status="error", error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(limit=8))


def _align_head(kishu: Any) -> None:
    """Put the database's HEAD back on this kernel's own last commit (or none) before a
    commit. kishu decides which variables changed from its in-memory hashes, which are
    this kernel's last commit's, and takes the unchanged ones' data from the HEAD
    commit: with a HEAD another writer moved, a variable changed since would be
    recorded with that writer's data (or missing hashes taken as "unchanged")."""
    if kishu._kishu_graph.head() == own_head:
        return
    if own_head is None:  # as kishu itself does when it attaches
        kishu._kishu_branch.reset_head()
        kishu._kishu_graph.reset()
        kishu._kishu_nb_graph.reset()
        return
    kishu._kishu_graph.jump(own_head)
    kishu._kishu_nb_graph.jump(own_head)
    kishu._kishu_branch.update_head(branch_name=None, commit_id=own_head, is_detach=True)


def prepare_commit(kishu: Any) -> None:
    """kishu's pre_run_cell for a checkpoint: every variable counts as accessed, the
    previous checkpoint's variables as those before the cell."""
    background = sys.modules.get("_gpushift_kishu_background")
    if background is not None:  # a background checkpoint's commit to build on
        background.adopt_finished()
    _align_head(kishu)
    planner = kishu._cr_planner
    head = kishu._kishu_graph.head()
    known = set(planner._ahg.get_active_variable_names(head)) if head else set()
    # A variable new since the last checkpoint gets its IdGraph in post_run_cell: a
    # placeholder here saves pre_run_cell from hashing (pickling) it a first time.
    for name in kishu._user_ns.keyset() - known:
        planner._id_graph_map.setdefault(name, None)
    kishu.pre_run_cell(None)
    planner._pre_run_cell_vars = known


def finish_commit(kishu: Any, cell_result: Any) -> str:
    """kishu's post_run_cell (the commit), then what it could not save, all in one
    transaction (`kishu_storage.one_transaction`); the commit id."""
    global own_head  # noqa: PLW0603 - the module is the kernel's memory
    with _storage().one_transaction(kishu.database_path()):
        kishu.post_run_cell(cell_result)
        commit_id = str(kishu._kishu_graph.head())
        _record_not_saved(kishu, commit_id)
    own_head = commit_id
    return commit_id


def _arm_checkpoint() -> None:
    kishu = _kishu_instance()
    if kishu is None:
        _answer(status="error", error="kishu is not attached in this kernel")
        return
    prepare_commit(kishu)
    ip = _ip()
    _answer(status="pending")

    def post_run_cell(cell_result: Any) -> None:
        ip.events.unregister("post_run_cell", post_run_cell)
        failed = False
        try:
            started = time.monotonic()
            commit_id = finish_commit(kishu, cell_result)
            _answer(status="ok", commit_id=commit_id,
                    commit_s=round(time.monotonic() - started, 3))
        except Exception as exc:
            _answer(status="error", error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(limit=8))
            failed = True
        if failed:  # out of the except block: its exception (and frames) is released
            _after_failed_commit()

    ip.events.register("post_run_cell", post_run_cell)


def _after_failed_commit() -> None:
    """A commit that failed half-way (the volume filled: SQLITE_FULL) was rolled back by
    `kishu_storage.one_transaction`; a connection kishu opened outside it may still sit
    in the failed frames with an open transaction, which SQLite rolls back only when it
    closes: collect them now, so the database is as the previous checkpoint left it (no
    -journal, no lock) and the space is free again. kishu's plan in memory may be ahead
    of the database: drop it, so the next checkpoint attaches again, from it."""
    kishu = _ip().user_ns.pop("_kishu", None)
    gc.collect()
    if kishu is None:
        return
    # A write that failed for lack of space leaves its -journal behind, hot: SQLite
    # rolls it back when a connection that may write next reads the database.
    con = sqlite3.connect(kishu.database_path(), timeout=5.0)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        con.close()


def restore(notebook_path: str, database: str, commit_id: str,
            settings: list[list[Any]]) -> None:
    """Load the commit's variables into this kernel (none re-run, each group on its
    own), then move kishu's HEAD there so the next checkpoint stores only changes."""
    started = time.monotonic()
    attach(notebook_path, database, settings)
    if json.loads(result)["status"] != "ok":
        return
    attached = time.monotonic()
    kishu = _kishu_instance()
    snapshots = sys.modules["_gpushift_kishu_snapshots"]
    report = snapshots.load_commit(kishu.database_path(), commit_id)
    ip = _ip()
    ip.user_ns.update(report.values)
    planner = kishu._cr_planner
    hashing = time.monotonic()
    # kishu's IdGraphs of what was loaded: in a thread, after this answer; the kernel's
    # next execution waits for them (restored_hashes.py).
    sys.modules["_gpushift_restored_hashes"].start(planner, report.values)
    planner._pre_run_cell_vars = set()
    kishu._kishu_graph.jump(commit_id)
    kishu._kishu_nb_graph.jump(commit_id)
    kishu._kishu_branch.update_head(branch_name=None, commit_id=commit_id, is_detach=True)
    kishu._variable_version_tracker.set_current(
        kishu._kishu_variable_version.get_variable_version_by_commit_id(commit_id))
    kishu._checkout_id += 1
    global restored_commit, own_head, installed_s  # noqa: PLW0603 - the kernel's memory
    restored_commit = own_head = commit_id
    importer: Any = sys.modules["_gpushift_kishu_import"]
    imported, importer.seconds = importer.seconds, 0.0  # told once, by the op it delayed
    installed, installed_s = installed_s, 0.0  # the same; that import was part of it
    _answer(status="ok", restored=sorted(report.values),
            not_restored=sorted(report.not_restored), moved_to_cpu=report.moved_to_cpu,
            failed_loads=report.failed_loads,
            seconds={"import": round(imported, 3),
                     "install": round(max(0.0, installed - imported), 3),
                     "attach": round(attached - started, 3),
                     "read": round(report.read_s, 3), "unpickle": round(report.unpickle_s, 3),
                     "hash": round(time.monotonic() - hashing, 3)})


def _cannot_pickle(value: Any) -> str:
    """Why a variable is not saved, as the checkpoint records it and the preview says it."""
    return f"not saved: a {type(value).__module__}.{type(value).__qualname__} cannot be pickled"


def _record_not_saved(kishu: Any, commit_id: str) -> None:
    """kishu skips a variable group it cannot pickle without a word; remember which
    names and why, so a restore in another process can say so; and when the commit was
    made."""
    missing: list[tuple[str, str]] = []
    con = _storage().connect(kishu.database_path())
    try:
        con.execute("create table if not exists gpushift_not_saved "
                    "(commit_id text, name text, reason text)")
        for vs in kishu._cr_planner._ahg.get_active_variable_snapshots(commit_id):
            stored = con.execute("select 1 from variable_snapshot where versioned_name = ? "
                                 "limit 1", (vs.versioned_name(),)).fetchone()
            if stored is None:
                for name in sorted(vs.name):
                    missing.append((name, _cannot_pickle(kishu._user_ns.to_dict().get(name))))
        con.executemany("insert into gpushift_not_saved values (?, ?, ?)",
                        [(commit_id, n, r) for n, r in missing])
        # When the checkpoint was made, for "Resume where you left off — from HH:MM".
        con.execute("create table if not exists gpushift_commit_time "
                    "(commit_id text primary key, made_at real)")
        con.execute("insert or replace into gpushift_commit_time values (?, ?)",
                    (commit_id, time.time()))
        con.commit()
    finally:
        con.close()


# What a restore refuses to reopen (`snapshots.SafeUnpickler`): a pickled file handle.
_FILE_TYPES = (io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom,
               io.TextIOWrapper)
_preview_cache: tuple[Any, dict[str, Any]] | None = None
"""The last preview's answer and what it was made of (execution count, names, ids)."""


class _WillNotComeBack(Exception):
    pass


class _PreviewPickler(dill.Pickler):  # type: ignore[misc]
    """kishu's pickler (dill) writing nowhere. Arrays' buffers stay out of band
    (protocol 5), so a large state costs little more than walking its objects. An open
    file is reported as a restore reports it: pickled, but never reopened."""

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, _FILE_TYPES):
            raise _WillNotComeBack(f"open file {getattr(obj, 'name', '?')!r} is not reopened "
                                   "after a move: open it again in a cell")
        super().save(obj, save_persistent_id)


class _Discard:
    def write(self, data: Any) -> int:
        return memoryview(data).nbytes  # bytes, or an array's memory (a PickleBuffer)


def preview(budget_s: float) -> None:
    """Which variables a checkpoint now would not bring back, and why: each variable
    kishu would save, pickled as a checkpoint pickles it (the C pickler, else dill's:
    `kishu_storage.pickle_group`), into nothing. Read-only; stops after
    `budget_s` (`checked_all` false). Answered from the last preview while no cell ran
    and no variable was rebound since."""
    global _preview_cache  # noqa: PLW0603 - the module is the kernel's memory
    ip = _ip()
    variables = [(name, value) for name, value in list(ip.user_ns.items())
                 if Namespace.no_ipython_var((name, value))]
    made_of = (ip.execution_count, tuple((name, id(value)) for name, value in variables))
    if _preview_cache is not None and _preview_cache[0] == made_of:
        _answer(**_preview_cache[1])
        return
    started = time.monotonic()
    unsaved: list[tuple[str, str]] = []
    checked_all = True
    for name, value in sorted(variables, key=lambda item: item[0]):
        if time.monotonic() - started > budget_s:
            checked_all = False
            break
        try:
            if not _storage().pickled_by_c({name: value}, _Discard()):
                _PreviewPickler(_Discard(), protocol=5, buffer_callback=lambda _: False).dump(
                    {name: value})
        except _WillNotComeBack as exc:
            unsaved.append((name, str(exc)))
        except Exception as exc:  # what kishu's checkpoint would skip, or fail on
            unsaved.append((name, f"{_cannot_pickle(value)} ({type(exc).__name__})"))
    fields = {"status": "ok", "unsaved": unsaved, "checked_all": checked_all,
              "elapsed_s": round(time.monotonic() - started, 3)}
    if checked_all:
        _preview_cache = (made_of, fields)
    _answer(**fields)


def _background(name: str) -> Callable[..., None]:
    def op(**args: Any) -> None:
        getattr(sys.modules["_gpushift_kishu_background"], name)(**args)
    return op


_OPS: dict[str, Callable[..., None]] = {
    "attach": attach, "restore": restore, "preview": preview,
    "background_start": _background("start"), "background_cancel": _background("cancel")}
