"""Background checkpoints in a real IPython kernel with real kishu: the kernel forks, the
child commits the state as it was at the fork, the kernel is free at once (a user cell
runs while the child works), a killed child leaves the earlier checkpoints intact."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import KishuHome, StartKernel

from gpushift_jupyter.kernel_state import checkpoint, database_path, restore
from gpushift_jupyter.kernel_state.database import read_commit
from gpushift_jupyter.kernel_state.driver import (
    BackgroundStep,
    background_cancel,
    background_outcome,
    background_start,
)
from gpushift_jupyter.kernel_state.retention import recover

BIG_STATE = ("import numpy as np\n"
             "arrays = [np.random.default_rng(i).random(2**21) for i in range(12)]  # 192 MiB\n"
             "x = 41\n")


async def until_ended(result: Path, pid: int | None, timeout: float = 120) -> BackgroundStep:
    assert pid is not None
    deadline = time.monotonic() + timeout
    while True:
        step = background_outcome(result, pid)
        if step.state != "running":
            return step
        assert time.monotonic() < deadline, "the background checkpoint never ended"
        await asyncio.sleep(0.1)


async def test_the_child_commits_the_state_of_the_fork_while_the_kernel_goes_on(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    kernel = await kishu_kernels()
    await kernel.cell(BIG_STATE)
    started = await background_start(kernel.code, notebook, workspace=workspace,
                                     max_state_bytes=2**31,
                                     result_path=tmp_path / "result.json")
    assert started.state == "started", started
    assert started.fork_ms is not None and started.state_bytes is not None
    assert started.state_bytes >= 192 * 2**20
    # The user runs a cell at once: it does not wait for the child's commit.
    t0 = time.perf_counter()
    await kernel.cell("x = 42")
    cell_s = time.perf_counter() - t0
    running = background_outcome(tmp_path / "result.json", started.pid or 0)
    print(f"\nfork {started.fork_ms:.1f} ms; a cell during the background checkpoint "
          f"took {cell_s * 1000:.0f} ms; the child was {running.state}")
    done = await until_ended(tmp_path / "result.json", started.pid)
    assert done.state == "done" and done.commit_id, done
    facts = read_commit(database_path(notebook, workspace), done.commit_id)
    assert {"arrays", "x"} <= set(facts.saved)

    fresh = await kishu_kernels()
    outcome = await restore(fresh.code, notebook, done.commit_id, workspace=workspace)
    assert outcome.ok, outcome.detail
    assert await fresh.value("x") == 41  # the state at the fork, not the cell after it
    assert await fresh.value("float(sum(a.sum() for a in arrays))") == await kernel.value(
        "float(sum(a.sum() for a in arrays))")
    # The kernel's own checkpoint afterwards still holds everything, as it is now.
    again = await checkpoint(kernel.code, notebook, workspace=workspace)
    last = await kishu_kernels()
    assert (await restore(last.code, notebook, again.commit_id, workspace=workspace)).ok
    assert await last.value("x") == 42


async def test_a_killed_child_leaves_the_earlier_checkpoints_intact(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    kernel = await kishu_kernels()
    await kernel.cell("values = list(range(1000))")
    first = await checkpoint(kernel.code, notebook, workspace=workspace)
    await kernel.cell(BIG_STATE)
    started = await background_start(kernel.code, notebook, workspace=workspace,
                                     max_state_bytes=2**31,
                                     result_path=tmp_path / "result.json")
    assert started.state == "started"
    await asyncio.sleep(0.3)  # mid-way through hashing and storing
    assert (await background_cancel(kernel.code)).state == "cancelled"
    assert background_outcome(tmp_path / "result.json", started.pid or 0).state == "failed"
    assert (await background_cancel(kernel.code)).state == "none"
    db = database_path(notebook, workspace)
    assert recover(db)  # a write cut short: its journal rolled back, as the server does
    fresh = await kishu_kernels()
    assert (await restore(fresh.code, notebook, first.commit_id, workspace=workspace)).ok
    assert await fresh.value("values[-1]") == 999


async def test_a_state_over_the_bound_is_skipped_and_says_why(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    kernel = await kishu_kernels()
    await kernel.cell("import numpy as np\nbig = np.zeros(2**22)")  # 32 MiB
    step = await background_start(kernel.code, kishu_home.notebook,
                                  workspace=kishu_home.workspace, max_state_bytes=2**24,
                                  result_path=tmp_path / "result.json")
    assert step.state == "skipped" and "32 MiB" in step.why and "16 MiB" in step.why, step
    assert not (tmp_path / "result.json").exists()


async def test_a_commit_is_based_on_the_kernels_own_last_one_not_the_childs(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    """The child moves the database's HEAD; a variable changed before the fork and
    changed back after it must be saved as it is now, not taken from the child's
    commit (kishu takes unchanged variables' data from the HEAD commit)."""
    notebook, workspace = kishu_home.notebook, kishu_home.workspace
    kernel = await kishu_kernels()
    await kernel.cell("y = 1\nother = 'a'")
    await checkpoint(kernel.code, notebook, workspace=workspace)
    await kernel.cell("y = 2")
    started = await background_start(kernel.code, notebook, workspace=workspace,
                                     max_state_bytes=2**31,
                                     result_path=tmp_path / "result.json")
    assert started.state == "started"
    child = await until_ended(tmp_path / "result.json", started.pid)
    assert child.state == "done", child
    await kernel.cell("y = 1")
    mine = await checkpoint(kernel.code, notebook, workspace=workspace)
    for commit, expected in ((child.commit_id, 2), (mine.commit_id, 1)):
        fresh = await kishu_kernels()
        assert commit is not None
        assert (await restore(fresh.code, notebook, commit, workspace=workspace)).ok
        assert await fresh.value("[y, other]") == [expected, "a"]
