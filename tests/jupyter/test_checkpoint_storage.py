"""Bounded storage of a notebook's kishu database, with real kernels and real kishu:
retention over many checkpoints of a changing state, and a volume that fills during a
checkpoint (a small tmpfs; mounting needs root, else the test says why it skipped)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    KishuHome,
    StartKernel,
    kill_before_journal_sync,
    kill_mid_prune,
    small_tmpfs,
)

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import (
    KernelStateError,
    checkpoint,
    database_path,
    restore,
)
from gpushift_jupyter.kernel_state.retention import prepare_database
from gpushift_jupyter.storage import StorageKeeper

MIB = 1024 * 1024
ARRAYS = 10
ARRAY_MIB = 5  # 10 arrays of 5 MiB: a 50 MiB state

DIGESTS = ("[__import__('hashlib').sha256(globals()[f'a{i}'].tobytes()).hexdigest() "
           f"for i in range({ARRAYS})]")


def keeper(runtime: Mapping[str, Any], workspace: Path,
           move: Mapping[str, Any] | None = None) -> StorageKeeper:
    async def current_move() -> Mapping[str, Any] | None:
        return move

    return StorageKeeper(lambda: runtime, current_move, workspace)


async def test_fifty_checkpoints_of_a_changing_state_stay_within_the_retention_bound(
        kishu_home: KishuHome, kishu_kernels: StartKernel) -> None:
    """50 checkpoints of a 50 MiB state, one 5 MiB array changed before each: with 5
    kept, the database holds the newest state plus the 4 older versions of what changed
    since, and the whole state of the 4th checkpoint, which a move still names (every
    array changed since): about 120 MiB, not 50 versions (300 MiB); it stops growing;
    the newest checkpoint and the move's restore exactly."""
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    db = database_path(notebook, workspace)
    db.parent.mkdir(parents=True)
    prepare_database(db)
    kernel = await kishu_kernels()
    await kernel.cell("import numpy as np\n"
                      f"for i in range({ARRAYS}):\n"
                      f"    globals()[f'a{{i}}'] = np.random.default_rng(i).random("
                      f"{ARRAY_MIB * MIB // 8})")
    runtime = {"optimizer": {"state": "on"}, "checkpoints": {"keep": 5}}
    move: dict[str, Any] = {"phase": "done"}
    storage = keeper(runtime, workspace, move)
    sizes: list[int] = []
    commits: list[str] = []
    moved_digests: list[str] = []
    for n in range(50):
        await kernel.cell(f"a{n % ARRAYS}[:1000] += 1.0")
        saved = await checkpoint(kernel.code, notebook, workspace=workspace)
        commits.append(saved.commit_id)
        if n == 3:  # a move recorded this one: it must stay whatever comes after
            move["checkpoint"] = {"notebook_path": str(notebook), "commit_id": saved.commit_id}
            moved_digests = await kernel.value(DIGESTS)
        report = await storage.tidy(notebook, saved.commit_id)
        assert report.skipped == "", report
        sizes.append(os.stat(db).st_size)
    newest_digests = await kernel.value(DIGESTS)

    state = ARRAYS * ARRAY_MIB * MIB
    # The newest state, 4 older versions of one array, the move's whole (older) state.
    bound = 2 * state + 4 * ARRAY_MIB * MIB + 8 * MIB
    print(f"database after 10, 25, 50 checkpoints: "
          f"{[round(s / MIB, 1) for s in (sizes[9], sizes[24], sizes[49])]} MiB "
          f"(live state {state // MIB} MiB, bound {bound / MIB:.0f} MiB)")
    assert max(sizes[10:]) <= bound + ARRAY_MIB * MIB, sizes
    assert sizes[49] <= sizes[24] + ARRAY_MIB * MIB, sizes  # no longer growing
    report = storage.last[db]
    assert report.prune is not None
    assert report.prune.kept[:5] == tuple(reversed(commits[-5:]))
    assert commits[3] in report.prune.kept  # the move's
    assert len(report.prune.kept) == 6

    fresh = await kishu_kernels()
    outcome = await restore(fresh.code, notebook, commits[-1], workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await fresh.value(DIGESTS) == newest_digests
    # After the restore, checkpoints stay incremental on the pruned database: one more
    # changed array adds one array's worth, and the state comes back again.
    before = os.stat(db).st_size
    await fresh.cell("a0[:10] = 7.0")
    again = await checkpoint(fresh.code, notebook, workspace=workspace)
    await storage.tidy(notebook, again.commit_id)
    assert os.stat(db).st_size <= before + ARRAY_MIB * MIB + MIB
    expected = await fresh.value(DIGESTS)
    last = await kishu_kernels()
    assert (await restore(last.code, notebook, again.commit_id, workspace=workspace)).ok
    assert await last.value(DIGESTS) == expected

    # The move's checkpoint, kept all along, restores exactly; a pruned one is gone.
    # (Last: a restore moves kishu's HEAD, which all kernels of a notebook share.)
    older = await kishu_kernels()
    outcome = await restore(older.code, notebook, commits[3], workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await older.value(DIGESTS) == moved_digests
    with pytest.raises(KernelStateError, match="not in"):
        await restore(await kishu_kernels(), notebook, commits[10], workspace=workspace)


@pytest.fixture
def small_volume(kishu_home: KishuHome) -> Iterator[Path]:
    """A 64 MiB tmpfs where the notebook lives (and so its kishu database)."""
    with small_tmpfs(kishu_home.notebook.parent / "small") as folder:
        yield folder


async def test_a_volume_that_fills_during_a_checkpoint(
        kishu_home: KishuHome, kishu_kernels: StartKernel, small_volume: Path) -> None:
    """A checkpoint that does not fit on a 64 MiB volume fails with "the volume is
    full" for the user; the earlier checkpoint restores intact, the notebook still
    saves, and once space is freed the next checkpoint works and restores."""
    notebook, workspace = small_volume / "train.ipynb", small_volume
    notebook.write_text(kishu_home.notebook.read_text())
    db = database_path(notebook, workspace)
    db.parent.mkdir(parents=True)
    prepare_database(db)
    storage = keeper({"optimizer": {"state": "on"}, "checkpoints": {"min_free_mib": 0}},
                     workspace)
    kernel = await kishu_kernels()
    await kernel.cell("import numpy as np\nsmall = np.random.default_rng(1).random("
                      f"{8 * MIB // 8})\nname = 'first'")
    first = await checkpoint(kernel.code, notebook, workspace=workspace)
    first_digest = await kernel.value("__import__('hashlib').sha256(small.tobytes())"
                                      ".hexdigest()")
    # 60 MiB of random data: does not fit beside the 8 MiB already there.
    await kernel.cell(f"big = np.random.default_rng(2).random({60 * MIB // 8})\n"
                      "name = 'second'")
    await storage.check_room(notebook)  # the estimate (8 MiB) let it go: kishu finds out
    with pytest.raises(KernelStateError) as failed:
        await checkpoint(kernel.code, notebook, workspace=workspace)
    error = storage.failure(notebook, str(failed.value))
    assert error is not None, str(failed.value)
    assert error.status == 507 and error.error == "volume_full"
    assert "volume is full" in error.detail and "previous checkpoints are intact" in \
        error.detail, error.detail
    assert "Traceback" not in error.detail
    # kishu's failed write was rolled back: no -journal, its space free again.
    assert not Path(f"{db}-journal").exists()
    assert os.statvfs(small_volume).f_bavail * os.statvfs(small_volume).f_frsize > 40 * MIB

    # The notebook still saves: SQLite rolled the failed write back, freeing its space.
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}) + " " * 1024 * 1024)
    # The earlier checkpoint restores intact in a new kernel.
    fresh = await kishu_kernels()
    outcome = await restore(fresh.code, notebook, first.commit_id, workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await fresh.value("name") == "first"
    assert await fresh.value("__import__('hashlib').sha256(small.tobytes()).hexdigest()"
                             ) == first_digest
    assert "big" not in await fresh.value("sorted(globals())")

    # Space freed in the first kernel: the next checkpoint works and restores, and the
    # failed checkpoint's rows are pruned.
    await kernel.cell("del big\nbig = np.arange(1000)\nname = 'third'")
    third = await checkpoint(kernel.code, notebook, workspace=workspace)
    report = await storage.tidy(notebook, third.commit_id)
    assert report.prune is not None and first.commit_id in report.prune.kept
    last = await kishu_kernels()
    assert (await restore(last.code, notebook, third.commit_id, workspace=workspace)).ok
    assert await last.value("[name, int(big.sum())]") == ["third", 499500]


async def test_a_nearly_full_volume_refuses_the_checkpoint_before_it_starts(
        kishu_home: KishuHome, small_volume: Path) -> None:
    """Less free than the admin's minimum (256 MiB by default, on a 64 MiB volume): the
    checkpoint is refused at once, saying how much is free and why."""
    notebook, workspace = small_volume / "train.ipynb", small_volume
    notebook.write_text(kishu_home.notebook.read_text())
    storage = keeper({"optimizer": {"state": "on"}}, workspace)
    with pytest.raises(ApiError) as refused:
        await storage.check_room(notebook)
    assert refused.value.status == 507 and refused.value.error == "volume_full"
    assert "nearly full" in refused.value.detail
    assert "256 MiB" in refused.value.detail, refused.value.detail
    assert not database_path(notebook, workspace).exists()


@pytest.mark.parametrize("killed", [kill_mid_prune, kill_before_journal_sync],
                         ids=["mid_prune", "before_journal_sync"])
async def test_a_write_killed_before_its_commit_loses_no_checkpoint(
        kishu_home: KishuHome, kishu_kernels: StartKernel,
        killed: Callable[[Path], None]) -> None:
    """The pod is killed while a write holds its transaction: a prune (a hot -journal is
    left), or a writer killed before it synced its journal (the old pod's kernel
    mid-restore when its server was killed: a -journal SQLite does not count as hot, so
    it neither rolls it back nor deletes it). A read-only restore refuses either as
    "being written". On the new pod the restore (under the database's lock, as the
    server's restore runs it) undoes it and brings the last verified checkpoint back
    exactly. Killed again: the next checkpoint, taken under the lock, succeeds and
    restores; the older checkpoint survived both kills."""
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    db = database_path(notebook, workspace)
    db.parent.mkdir(parents=True)
    prepare_database(db)
    storage = keeper({"optimizer": {"state": "on"}}, workspace)
    old = await kishu_kernels()
    await kernel_with_state(old)
    first = await checkpoint(old.code, notebook, workspace=workspace)
    await old.cell("a0[:1000] += 1.0\nname = 'second'")
    second = await checkpoint(old.code, notebook, workspace=workspace)
    digests = await old.value(DIGESTS)
    await old.manager.shutdown_kernel(now=True)  # the old pod's kernel dies with it

    killed(db)
    with pytest.raises(KernelStateError, match="kishu is writing"):
        await restore(await kishu_kernels(), notebook, second.commit_id,  # not locked
                      workspace=workspace)
    new = await kishu_kernels()
    async with storage.writing(notebook):
        outcome = await restore(new.code, notebook, second.commit_id, workspace=workspace)
    assert outcome.ok, outcome.detail
    assert not Path(f"{db}-journal").exists()
    assert await new.value(DIGESTS) == digests
    assert await new.value("name") == "second"
    # Killed again; the next checkpoint (in the restored kernel) comes first.
    killed(db)
    await new.cell("a1[:1000] += 1.0\nname = 'third'")
    async with storage.writing(notebook, create=True):
        third = await checkpoint(new.code, notebook, workspace=workspace)
    assert not Path(f"{db}-journal").exists()
    expected = await new.value(DIGESTS)
    last = await kishu_kernels()
    async with storage.writing(notebook):
        assert (await restore(last.code, notebook, third.commit_id, workspace=workspace)).ok
    assert await last.value(DIGESTS) == expected
    assert await last.value("name") == "third"
    # Neither killed write took the older checkpoint. (Last: a restore moves kishu's
    # HEAD, which all kernels of a notebook share.)
    older = await kishu_kernels()
    async with storage.writing(notebook):
        assert (await restore(older.code, notebook, first.commit_id, workspace=workspace)).ok
    assert await older.value("name") == "first"


async def kernel_with_state(kernel: Any) -> None:
    await kernel.cell("import numpy as np\n"
                      f"for i in range({ARRAYS}):\n"
                      f"    globals()[f'a{{i}}'] = np.random.default_rng(i).random("
                      f"{MIB // 8})\n"
                      "name = 'first'")
