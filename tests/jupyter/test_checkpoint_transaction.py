"""A checkpoint is one SQLite transaction (`kishu_patches.one_transaction`): kishu's
twenty-odd commits per checkpoint, each synced to disk, become one; and a checkpoint
that fails half-way leaves nothing of itself in the database. Real kernels, real kishu.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import KishuHome, StartKernel

from gpushift_jupyter.kernel_state import (
    KernelStateError,
    checkpoint,
    database_path,
    restore,
)
from gpushift_jupyter.kernel_state.retention import prepare_database

STATE = ("import numpy as np, pandas as pd\n"
         "a = np.arange(100_000) * {v}\n"
         "b = np.ones(50_000) * {v}\n"
         "frame = pd.DataFrame({{'x': range(1000), 'y': [str(i * {v}) for i in range(1000)]}})\n"
         "name = 'version {v}'\n"
         "class Box:\n"
         "    def __init__(self, v):\n"
         "        self.v = v\n"
         "box = Box({v})\n")
VALUES = "[int(a.sum()), float(b.sum()), frame['y'].iloc[-1], name, box.v]"


def change_counter(db: Path) -> int:
    """SQLite's file change counter (header bytes 24-27): one more for every write
    transaction committed to a database in rollback-journal mode."""
    with open(db, "rb") as f:
        header = f.read(28)
    return int.from_bytes(header[24:28], "big")


def rows(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return {table: int(con.execute(f"select count(*) from {table}").fetchone()[0])
                for table in ("commit_entry", "variable_snapshot", "ahg_active_vses",
                              "commit_variable", "gpushift_not_saved")}
    finally:
        con.close()


@pytest.fixture
def db(kishu_home: KishuHome) -> Path:
    path = database_path(kishu_home.notebook, kishu_home.workspace)
    path.parent.mkdir(parents=True)
    prepare_database(path)  # as the server creates it
    return path


async def test_a_checkpoint_is_one_sqlite_transaction(
        kishu_home: KishuHome, kishu_kernels: StartKernel, db: Path) -> None:
    """The second checkpoint of a state of several variable groups (arrays, a DataFrame,
    a string, an instance of a notebook class), all of them changed, commits to the
    database once; and restores exactly."""
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    kernel = await kishu_kernels()
    await kernel.cell(STATE.format(v=1))
    await checkpoint(kernel.code, notebook, workspace=workspace)  # attaches kishu first
    await kernel.cell(STATE.format(v=2))
    before = change_counter(db)
    saved = await checkpoint(kernel.code, notebook, workspace=workspace)
    assert change_counter(db) - before == 1
    expected = await kernel.value(VALUES)
    assert expected == [2 * 4999950000, 100000.0, "1998", "version 2", 2]
    fresh = await kishu_kernels()
    outcome = await restore(fresh.code, notebook, saved.commit_id, workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await fresh.value(VALUES) == expected


async def test_a_checkpoint_that_fails_half_way_leaves_nothing_behind(
        kishu_home: KishuHome, kishu_kernels: StartKernel, db: Path) -> None:
    """The commit fails after kishu wrote every group, its commit entry and graph (here:
    the last step, recording what could not be saved, raises): not one row of it stays,
    no -journal is left, the previous checkpoint restores exactly, and the next
    checkpoint works."""
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    kernel = await kishu_kernels()
    await kernel.cell(STATE.format(v=1))
    first = await checkpoint(kernel.code, notebook, workspace=workspace)
    first_values = await kernel.value(VALUES)
    before = rows(db)

    await kernel.cell(STATE.format(v=3))
    await kernel.cell(
        "import sys as _sys\n"
        "_agent = _sys.modules['_gpushift_kishu']\n"
        "_kept_record = _agent._record_not_saved\n"
        "def _failing_record(kishu, commit_id):\n"
        "    _kept_record(kishu, commit_id)  # everything written, then the failure\n"
        "    raise OSError(28, 'No space left on device (injected)')\n"
        "_agent._record_not_saved = _failing_record\n")
    with pytest.raises(KernelStateError, match="injected"):
        await checkpoint(kernel.code, notebook, workspace=workspace)
    assert rows(db) == before
    assert not Path(f"{db}-journal").exists()

    fresh = await kishu_kernels()
    outcome = await restore(fresh.code, notebook, first.commit_id, workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await fresh.value(VALUES) == first_values

    await kernel.cell("_agent._record_not_saved = _kept_record")
    again = await checkpoint(kernel.code, notebook, workspace=workspace)
    assert rows(db)["commit_entry"] == before["commit_entry"] + 1
    last = await kishu_kernels()
    outcome = await restore(last.code, notebook, again.commit_id, workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await last.value(VALUES) == [3 * 4999950000, 150000.0, "2997", "version 3", 3]
