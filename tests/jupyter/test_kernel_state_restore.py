"""Checkpoint in one kernel, restore in another kernel process, with real kishu 0.3.4.

What a pod restart does to a notebook: the state is saved by the driver in kernel A,
and loaded by the driver into kernel B, a fresh process. Nothing may be re-run, and
neither the user's files, the notebook nor the checkpoints may change.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from conftest import KishuHome, KishuKernel, StartKernel

from gpushift_jupyter.kernel_state import (
    KernelStateError,
    attach,
    checkpoint,
    database_path,
    restore,
)
from gpushift_jupyter.kernel_state.driver import RESTORED_HASHES_MODULE

STATE_CELLS = [
    "import numpy as np, pandas as pd\n"
    "count = 42\n"
    "title = 'gpushift ü'\n"
    "big = np.random.default_rng(7).random(50 * 2**20 // 8)  # 50 MiB\n"
    "df = pd.DataFrame({'a': range(1000), 'b': [str(i) for i in range(1000)]})",
    # a class defined in the notebook itself
    "class Point:\n"
    "    def __init__(self, x, y):\n"
    "        self.x, self.y = x, y\n"
    "    def norm2(self):\n"
    "        return self.x ** 2 + self.y ** 2\n"
    "point = Point(3, 4)",
    "offset = 1\nsquare = lambda v: v * v + offset",
    "gen = (i * i for i in range(5))",
]


def snapshot_rows(db: Path) -> list[tuple[str, str, int]]:
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return [(str(v), str(c), int(n)) for v, c, n in con.execute(
            "SELECT versioned_name, commit_id, length(data) FROM variable_snapshot "
            "ORDER BY rowid")]
    finally:
        con.close()


def names_stored_by(kishu_home: KishuHome, commit_id: str) -> set[str]:
    """The variables a commit stored anew (those unchanged since are not stored again)."""
    return {name for versioned, commit, _ in snapshot_rows(
        database_path(kishu_home.notebook, kishu_home.workspace))
        if commit == commit_id for name in versioned.split(",")[1:]}


async def restore_with_slow_hashes(kishu_home: KishuHome, kishu_kernels: StartKernel,
                                   commit_id: str, delay_s: float) -> KishuKernel:
    """A fresh kernel with `commit_id` restored, whose hashing thread sleeps `delay_s`
    first (`restored_hashes.delay_s`): a cell sent at once comes while it runs."""
    kernel = await kishu_kernels()
    await attach(kernel.code, kishu_home.notebook, workspace=kishu_home.workspace)
    await kernel.cell(
        f"__import__('sys').modules[{RESTORED_HASHES_MODULE!r}].delay_s = {delay_s!r}")
    assert (await restore(kernel.code, kishu_home.notebook, commit_id,
                          workspace=kishu_home.workspace)).ok
    return kernel


async def latest_in_fresh_kernel(kishu_home: KishuHome,
                                 kishu_kernels: StartKernel) -> KishuKernel:
    """A fresh kernel with the notebook's newest checkpoint restored."""
    kernel = await kishu_kernels()
    assert (await restore(kernel.code, kishu_home.notebook, None,
                          workspace=kishu_home.workspace)).ok
    return kernel


async def test_state_comes_back_in_a_new_kernel_process(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    notebook_bytes = kishu_home.notebook.read_bytes()
    user_file = tmp_path / "home" / "work" / "results.txt"
    a = await kishu_kernels()
    for cell in STATE_CELLS:
        await a.cell(cell)
    # A cell whose side effect must never repeat: open(path, 'w') truncates the file.
    await a.cell(f"log = open({str(user_file)!r}, 'w')\nlog.write('precious')\nlog.flush()")
    expected = await a.value(
        "[count, title, hashlib_sha(big), df.to_json(), point.norm2(), square(3)]".replace(
            "hashlib_sha(big)", "__import__('hashlib').sha256(big.tobytes()).hexdigest()"))
    count_before = await a.value("get_ipython().execution_count")

    saved = await checkpoint(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    db = database_path(kishu_home.notebook, kishu_home.workspace)
    assert saved.database == db and saved.database_bytes == db.stat().st_size
    assert {"count", "title", "big", "df", "Point", "point", "square", "offset",
            "log"} <= set(saved.saved)
    assert [name for name, _ in saved.not_saved] == ["gen"]
    assert "generator" in saved.not_saved[0][1]
    # One recorded cell: one execution count, the user's next cell just counts on.
    assert await a.value("get_ipython().execution_count") == count_before + 2
    assert kishu_home.notebook.read_bytes() == notebook_bytes
    rows_after_checkpoint = snapshot_rows(db)

    b = await kishu_kernels()  # the new pod's kernel: a new process
    assert await b.value("'big' in globals()") is False
    outcome = await restore(b.code, kishu_home.notebook, saved.commit_id,
                            workspace=kishu_home.workspace)

    assert outcome.ok, outcome
    assert set(outcome.restored) >= {"count", "title", "big", "df", "Point", "point",
                                     "square", "offset", "np", "pd"}
    reasons = dict(outcome.not_restored)
    assert set(reasons) == {"gen", "log"}
    assert "not reopened" in reasons["log"] and "generator" in reasons["gen"]
    got = await b.value(
        "[count, title, __import__('hashlib').sha256(big.tobytes()).hexdigest(), "
        "df.to_json(), point.norm2(), square(3)]")
    assert got == expected
    assert await b.value("isinstance(point, Point)") is True
    assert await b.value("'log' in globals() or 'gen' in globals()") is False
    # Nothing was re-run or reopened: the user's file, the notebook and the
    # checkpoints are as they were.
    assert user_file.read_text() == "precious"
    assert kishu_home.notebook.read_bytes() == notebook_bytes
    assert snapshot_rows(db) == rows_after_checkpoint
    assert hashlib.sha256(notebook_bytes).digest() == hashlib.sha256(
        kishu_home.notebook.read_bytes()).digest()

    # The restored kernel checkpoints incrementally: a small change stores a small
    # group, not the 50 MiB array again.
    await b.cell("count += 1")
    again = await checkpoint(b.code, kishu_home.notebook, workspace=kishu_home.workspace)
    new_rows = snapshot_rows(db)[len(rows_after_checkpoint):]
    assert [name.split(",")[1:] for name, _, _ in new_rows] == [["count"]]
    assert all(commit == again.commit_id for _, commit, _ in new_rows)
    c = await kishu_kernels()
    latest = await restore(c.code, kishu_home.notebook, None, workspace=kishu_home.workspace)
    assert latest.ok and "big" in latest.restored
    assert await c.value("[count, __import__('hashlib').sha256(big.tobytes()).hexdigest()]"
                         ) == [43, expected[2]]


async def test_functions_defined_before_attach_keep_seeing_the_namespace(
        kishu_home: KishuHome, kishu_kernels: StartKernel) -> None:
    """kishu's init_kishu swaps the user namespace for a copy: functions defined before
    then read stale globals. The driver keeps the namespace object."""
    a = await kishu_kernels()
    await a.cell("x = 1\ndef read_x():\n    return x")
    await attach(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    await checkpoint(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    await a.cell("x = 2")
    assert await a.value("[read_x(), globals() is __import__('sys').modules['__main__'].__dict__]"
                         ) == [2, True]


async def test_one_variable_that_fails_to_load_does_not_stop_the_others(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    """A value of a module the new kernel lacks is reported by name; the rest loads."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "vanishing.py").write_text("class Thing:\n    value = 3\n")
    a = await kishu_kernels({"PYTHONPATH": str(modules)})
    await a.cell("import vanishing\nthing = vanishing.Thing()\nkept = [1, 2, 3]")
    saved = await checkpoint(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    b = await kishu_kernels()  # no PYTHONPATH: the module is missing there
    outcome = await restore(b.code, kishu_home.notebook, saved.commit_id,
                            workspace=kishu_home.workspace)
    assert not outcome.ok
    reasons = dict(outcome.not_restored)
    assert "thing" in reasons and "ModuleNotFoundError" in reasons["thing"]
    assert "kept" in outcome.restored and "thing" not in outcome.restored
    assert "thing" in outcome.detail
    assert await b.value("kept") == [1, 2, 3]


@pytest.mark.parametrize("damage", ["missing", "corrupt", "unknown_commit", "journal"])
async def test_a_bad_database_is_a_clear_error_and_loses_nothing(
        kishu_home: KishuHome, kishu_kernels: StartKernel, damage: str) -> None:
    db = database_path(kishu_home.notebook, kishu_home.workspace)
    commit: str | None = None
    if damage != "missing":
        a = await kishu_kernels()
        await a.cell("value = 1")
        commit = (await checkpoint(a.code, kishu_home.notebook,
                                   workspace=kishu_home.workspace)).commit_id
        await a.manager.shutdown_kernel(now=True)
    if damage == "corrupt":
        data = bytearray(db.read_bytes())
        data[:100] = b"\x00" * 100  # the SQLite header gone
        db.write_bytes(bytes(data))
    if damage == "unknown_commit":
        commit = "0" * 32
    if damage == "journal":
        db.with_name(db.name + "-journal").write_bytes(b"in flight")
    def files() -> dict[str, bytes]:
        return ({p.name: p.read_bytes() for p in db.parent.iterdir()}
                if db.parent.exists() else {})

    before = files()

    b = await kishu_kernels()
    expected = {"missing": "no kishu database", "corrupt": "not a kishu database",
                "unknown_commit": "is not in", "journal": "kishu is writing"}[damage]
    with pytest.raises(KernelStateError, match=expected):
        await restore(b.code, kishu_home.notebook, commit, workspace=kishu_home.workspace)

    assert files() == before
    assert await b.value("'value' in globals()") is False


async def test_a_kernel_that_does_not_answer_is_a_clear_error(
        kishu_home: KishuHome, kishu_kernels: StartKernel) -> None:
    a = await kishu_kernels()
    await attach(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    busy = a.client.execute("import time; time.sleep(3)")
    with pytest.raises(KernelStateError, match="did not answer within 1 s"):
        await checkpoint(a.code, kishu_home.notebook, timeout=1, workspace=kishu_home.workspace)
    assert busy
    await a.manager.shutdown_kernel(now=True)
    with pytest.raises(KernelStateError, match="not running"):
        await attach(a.code, kishu_home.notebook, workspace=kishu_home.workspace)


async def test_changes_made_in_place_after_a_restore_are_saved(
        kishu_home: KishuHome, kishu_kernels: StartKernel) -> None:
    """kishu decides what changed by comparing each variable's IdGraph hash with the one
    taken after the restore; gpushift hashes plain arrays and strings directly
    (`kishu_patches._DigestPickler`). Every kind of in-place change must still count."""
    a = await kishu_kernels()
    await a.cell("import numpy as np, pandas as pd\n"
                 "big = np.arange(2_000_000, dtype=np.float64)\n"
                 "grid = np.zeros((4, 6))\n"
                 "table = pd.DataFrame({'n': range(100), 's': [str(i) for i in range(100)]})\n"
                 "words = ['alpha', 'beta']\n"
                 "fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))")
    saved = await checkpoint(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    b = await kishu_kernels()
    assert (await restore(b.code, kishu_home.notebook, saved.commit_id,
                          workspace=kishu_home.workspace)).ok
    await b.cell("big[::1000] += 1.0\n"
                 "grid.shape = (6, 4)\n"
                 "table.loc[5, 's'] = 'changed'\n"
                 "words[1] = 'gamma'")
    changed = await checkpoint(b.code, kishu_home.notebook, workspace=kishu_home.workspace)
    stored = names_stored_by(kishu_home, changed.commit_id)
    assert {"big", "grid", "table", "words"} <= stored
    assert "fortran" not in stored  # unchanged: not stored again
    c = await latest_in_fresh_kernel(kishu_home, kishu_kernels)
    assert await c.value(
        "[float(big[1000]), float(big[1001]), list(grid.shape), table.loc[5, 's'], words, "
        "bool(fortran.flags.f_contiguous), float(fortran[2, 3])]"
    ) == [1001.0, 1001.0, [6, 4], "changed", ["alpha", "gamma"], True, 11.0]


async def test_a_cell_right_after_a_restore_waits_for_the_restored_hashes(
        kishu_home: KishuHome, kishu_kernels: StartKernel) -> None:
    """The restore answers before kishu's IdGraphs of what it loaded are taken (a
    thread, `restored_hashes.py`); a cell that changes a variable at once must still
    find it hashed as restored, or the next checkpoint would not store the change. The
    thread is made to sleep a second first, so the cell surely comes while it runs."""
    a = await kishu_kernels()
    await a.cell("import numpy as np\n"
                 "big = np.arange(2_000_000, dtype=np.float64)\n"
                 "words = ['alpha', 'beta']\n"
                 "kept = np.ones(10)")
    saved = await checkpoint(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    b = await restore_with_slow_hashes(kishu_home, kishu_kernels, saved.commit_id, 1.0)
    await b.cell("big[::1000] += 1.0\nwords[1] = 'gamma'")
    # The cell waited: the thread was still running when the restore had answered.
    assert await b.value(
        f"__import__('sys').modules[{RESTORED_HASHES_MODULE!r}].waited_s > 0.5") is True
    changed = await checkpoint(b.code, kishu_home.notebook, workspace=kishu_home.workspace)
    stored = names_stored_by(kishu_home, changed.commit_id)
    assert {"big", "words"} <= stored
    assert "kept" not in stored  # hashed as restored, unchanged: not stored again
    c = await latest_in_fresh_kernel(kishu_home, kishu_kernels)
    assert await c.value("[float(big[1000]), float(big[1001]), words]") == [
        1001.0, 1001.0, ["alpha", "gamma"]]


async def test_a_variable_the_thread_cannot_hash_is_hashed_before_the_next_cell(
        kishu_home: KishuHome, kishu_kernels: StartKernel) -> None:
    """A value whose hashing fails in the restore's thread (here: it pickles on the main
    thread only) is hashed again before the next cell runs, in the kernel's own
    thread: a change the cell makes to it must still be stored."""
    a = await kishu_kernels()
    await a.cell("import threading\n"
                 "class MainThreadOnly:\n"
                 "    def __init__(self, n):\n"
                 "        self.n = n\n"
                 "    def __reduce_ex__(self, protocol):\n"
                 "        if threading.current_thread() is not threading.main_thread():\n"
                 "            raise RuntimeError('main thread only')\n"
                 "        return (MainThreadOnly, (self.n,))\n"
                 "picky = MainThreadOnly(1)")
    saved = await checkpoint(a.code, kishu_home.notebook, workspace=kishu_home.workspace)
    b = await restore_with_slow_hashes(kishu_home, kishu_kernels, saved.commit_id, 0.5)
    await b.cell("picky.n = 5")
    changed = await checkpoint(b.code, kishu_home.notebook, workspace=kishu_home.workspace)
    stored = names_stored_by(kishu_home, changed.commit_id)
    assert "picky" in stored
    c = await latest_in_fresh_kernel(kishu_home, kishu_kernels)
    assert await c.value("picky.n") == 5
