"""What a background checkpoint costs the user, with real kernels and kishu.

For states of 10 MiB, 100 MiB and 1 GiB (`--quick`: the first two), made of 100 array
variables, each round changes one of them (1% of the state) as a cell would, then starts a
background checkpoint as the server does (`driver.background_start`: the kernel forks,
the child commits) and at once runs a user cell. Printed, in the same run:
- the kernel's busy time per background checkpoint (the silent request that forks,
  p50/p99) against an empty cell's round trip (the kernel's own latency);
- the user cell run right after the fork (p50/p99): what a user waits;
- the child's commit time (p50/p99), off the user's path, and a checkpoint made in
  the kernel instead (what the user would wait without the fork);
- the database's size over the rounds, pruned to the newest 5 after each as the server
  does, against the live state's size.

    .venv/bin/python bench/background_checkpoint.py [--quick] [--rounds N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from checkpoint_kishu import MIB, Kernel, kernel_environment, start_kernel, timed

from gpushift_jupyter.kernel_state import attach, checkpoint, database_path
from gpushift_jupyter.kernel_state.driver import background_outcome, background_start
from gpushift_jupyter.storage import StorageKeeper

ARRAYS = 100


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:7.1f} ms, p99 {p99(values) * 1000:7.1f} ms"


async def until_done(result: Path, pid: int) -> Any:
    while (outcome := background_outcome(result, pid)).state == "running":
        await asyncio.sleep(0.02)
    if outcome.state != "done":
        raise RuntimeError(f"background checkpoint {outcome.state}: {outcome.why}")
    return outcome


async def bench_size(work: Path, env: dict[str, str], mib: int, rounds: int) -> None:
    folder = work / f"state-{mib}"
    folder.mkdir()
    notebook = folder / "bench.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')

    async def no_move() -> Mapping[str, Any] | None:
        return None

    runtime = {"optimizer": {"state": "on"}, "checkpoints": {"keep": 5}}
    storage = StorageKeeper(lambda: runtime, no_move, work)
    kernel: Kernel = await start_kernel(work, env)
    each = mib * MIB // ARRAYS // 8
    busy: list[float] = []
    empty: list[float] = []
    user: list[float] = []
    child: list[float] = []
    sizes: list[int] = []
    try:
        # 100 variables: kishu saves what changed by variable.
        await kernel.cell("import numpy as np\n"
                          f"for i in range({ARRAYS}):\n"
                          f"    globals()[f'a{{i}}'] = np.random.default_rng(i).random({each})")
        # The server attaches kishu when the notebook opens (importing kishu in the
        # kernel: once per kernel, not per background checkpoint).
        attach_s, _ = await timed(attach(kernel.code, notebook, workspace=work))
        for n in range(rounds):
            await kernel.cell(f"a{n % ARRAYS} += 1.0")  # 1% of the state changed
            empty.append((await timed(kernel.cell("pass")))[0])
            result = work / f"result-{mib}-{n}.json"  # the kernel reads and deletes it
            seconds, step = await timed(background_start(
                kernel.code, notebook, workspace=work, max_state_bytes=2**40,
                result_path=result))
            busy.append(seconds)
            user.append((await timed(kernel.cell("t = 1")))[0])
            done = await until_done(result, step.pid)
            child.append(float(done.commit_s))
            await storage.tidy(notebook, done.commit_id)
            sizes.append(database_path(notebook, work).stat().st_size)
        await kernel.cell("a0 += 1.0")
        foreground, _ = await timed(checkpoint(kernel.code, notebook, workspace=work))
    finally:
        await kernel.stop()
    print(f"\n== {mib} MiB state ({ARRAYS} arrays), 1% changed per round, {rounds} rounds ==")
    print(f"kishu attached once, when the notebook opened: {attach_s * 1000:.0f} ms")
    print(f"kernel busy per background checkpoint (fork): {ms(busy)}")
    print(f"  an empty cell's round trip (baseline):      {ms(empty)}  "
          f"ratio p50 {statistics.median(busy) / statistics.median(empty):.2f}")
    print(f"a user cell run right after the fork:         {ms(user)}")
    print(f"the child's commit (off the user's path):     {ms(child)}")
    print(f"the same checkpoint made in the kernel:       {foreground * 1000:7.1f} ms "
          f"(what the user would wait without the fork)")
    marks = [m for m in (1, 5, 10, 25, 50) if m <= rounds]
    print("database (newest 5 kept): " + "  ".join(
        f"after {m}: {sizes[m - 1] / MIB:.1f} MiB ({sizes[m - 1] / MIB / mib:.2f}x)"
        for m in marks) + f"  of a {mib} MiB live state")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 MiB only")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--dir", help="where the notebooks go (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpushift-bench-", dir=args.dir))
    try:
        env = kernel_environment(work)
        print(f"kernels: {sys.executable}; files in {work}")
        for mib in [10, 100] if args.quick else [10, 100, 1024]:
            rounds = args.rounds if mib < 1024 else min(args.rounds, 20)
            await bench_size(work, env, mib, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
    print(f"\n({time.monotonic() - started:.0f} s)")
