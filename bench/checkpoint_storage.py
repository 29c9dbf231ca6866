"""The kishu database's size over 50 checkpoints of a changing state, against the live
state's size, without and with gpushift's retention, in one run, with real kernels.

The state: 10 numpy arrays of 5 MiB (50 MiB; `--mib` changes it), one array partly
changed before each checkpoint (kishu stores the changed array again, 5 MiB). Two
notebooks get the same 50 checkpoints: one as kishu leaves it, one pruned after each
checkpoint to the newest `--keep` (5) with its space given back (`StorageKeeper.tidy`,
as the server extension does after every verified checkpoint). Printed: the size of
each database after 10, 25 and 50 checkpoints, its ratio to the live state, the prune
and reclaim time per checkpoint (off the user's path), and a check that the newest
checkpoint of the pruned database restores exactly.

    .venv/bin/python bench/checkpoint_storage.py [--mib 50] [--checkpoints 50] [--keep 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_kishu import MIB, Kernel, kernel_environment, start_kernel

from gpushift_jupyter.kernel_state import (
    checkpoint,
    database_path,
    restore,
)
from gpushift_jupyter.kernel_state.retention import prepare_database
from gpushift_jupyter.storage import StorageKeeper

ARRAYS = 10
DIGESTS = ("__import__('json').dumps([__import__('hashlib').sha256(globals()[f'a{i}']"
           f".tobytes()).hexdigest() for i in range({ARRAYS})])")


async def value(kernel: Kernel, expression: str) -> Any:
    reply = await kernel.client.execute_interactive(
        "", silent=True, user_expressions={"v": expression}, timeout=600,
        output_hook=lambda _m: None)
    text = reply["content"]["user_expressions"]["v"]["data"]["text/plain"]
    return json.loads(text.strip("'"))


async def run(work: Path, env: dict[str, str], mib: int, count: int, keep: int) -> None:
    notebooks = {}
    for name in ("plain", "kept"):
        folder = work / name
        folder.mkdir()
        notebook = folder / "bench.ipynb"
        notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                        "nbformat_minor": 5}))
        notebooks[name] = notebook
    kept_db = database_path(notebooks["kept"], work)
    kept_db.parent.mkdir(parents=True)
    prepare_database(kept_db)  # as the server extension does

    async def no_move() -> Mapping[str, Any] | None:
        return None

    runtime = {"optimizer": {"state": "on"}, "checkpoints": {"keep": keep}}
    storage = StorageKeeper(lambda: runtime, no_move, work)
    each = mib * MIB // ARRAYS // 8
    kernels = {name: await start_kernel(work, env) for name in notebooks}
    sizes: dict[str, list[int]] = {name: [] for name in notebooks}
    tidy_s: list[float] = []
    last_commit = ""
    try:
        for kernel in kernels.values():
            await kernel.cell("import numpy as np\n" + "".join(
                f"a{i} = np.random.default_rng({i}).random({each})\n" for i in range(ARRAYS)))
        for n in range(count):
            for name, kernel in kernels.items():
                await kernel.cell(f"a{n % ARRAYS}[:1000] += 1.0")
                saved = await checkpoint(kernel.code, notebooks[name], workspace=work)
                if name == "kept":
                    started = time.perf_counter()
                    report = await storage.tidy(notebooks[name], saved.commit_id)
                    tidy_s.append(time.perf_counter() - started)
                    assert report.skipped == "", report.skipped
                    last_commit = saved.commit_id
                sizes[name].append(database_path(notebooks[name], work).stat().st_size)
        expected = await value(kernels["kept"], DIGESTS)
    finally:
        for kernel in kernels.values():
            await kernel.stop()
    fresh = await start_kernel(work, env)
    try:
        outcome = await restore(fresh.code, notebooks["kept"], last_commit, workspace=work)
        exact = outcome.ok and await value(fresh, DIGESTS) == expected
    finally:
        await fresh.stop()

    live = ARRAYS * each * 8
    marks = [m for m in (10, 25, count) if m <= count]
    print(f"\n== {count} checkpoints of a {live / MIB:.0f} MiB state ({ARRAYS} arrays, one "
          f"partly changed before each) ==")
    for name, label in (("plain", "kishu as is"), ("kept", f"keep {keep}")):
        row = "  ".join(f"after {m:2}: {sizes[name][m - 1] / MIB:7.1f} MiB "
                        f"({sizes[name][m - 1] / live:4.2f}x)" for m in marks)
        print(f"{label:12} {row}")
    final = sizes["kept"][-1] / sizes["plain"][-1]
    print(f"with retention the database is {final:.2f} of its size without "
          f"({sizes['kept'][-1] / live:.2f}x the live state against "
          f"{sizes['plain'][-1] / live:.2f}x)")
    print(f"prune + reclaim after each checkpoint (off the user's path): p50 "
          f"{statistics.median(tidy_s) * 1000:.0f} ms, max {max(tidy_s) * 1000:.0f} ms")
    print(f"newest checkpoint of the pruned database restores exactly: {exact}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument("--dir", help="where the notebooks go (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpushift-bench-", dir=args.dir))
    try:
        env = kernel_environment(work)
        await run(work, env, args.mib, args.checkpoints, args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
