"""Checkpoint and restore of a kernel's state with gpushift's kishu driver, against a
baseline of plain `dill` (dump the same variables to a file on the same disk, fsync, and
load them in a fresh kernel), in the same run, with real kernels.

For each state size (50 MiB, 500 MiB and 2 GiB; `--quick`: 50 MiB only; `--sizes`) it
prints, as medians of `--repeat` runs interleaved with the baseline's (one run at 2 GiB):
- a full checkpoint (the state cell run again with new values: everything stored) against
  dill dump+fsync, and a restore into a fresh kernel process against dill load into
  another fresh kernel;
- three incremental changes (a small variable, one of the four arrays modified in
  place, a new small variable), each followed by a checkpoint: its time and how much
  the database grew;
- the database size over the live state, and over one dill file of it;
- the memory a checkpoint faults in, against dill dump's;
- the restoring kernel's peak memory above what it held before, and all the memory it
  faulted in (each new page costs a fault: in a VM whose host backs memory lazily,
  2-10 s per GiB was measured), against dill load's;
- kishu's import and set-up in a fresh kernel (once per kernel, not counted above).
The last lines print every ratio beside issue 16's target (each <= 1.5x dill).

    .venv/bin/python bench/checkpoint_kishu.py [--quick] [--sizes 50,500,2048] [--dir DIR]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jupyter_client.manager

from gpushift_jupyter.kernel_state import (
    ClientKernel,
    attach,
    checkpoint,
    database_path,
    kishu_environment,
    prepare_kishu_home,
    restore,
)
from gpushift_jupyter.kernel_state.retention import prepare_database

MIB = 2**20
KERNEL_NAME = "gpushift-bench-python"


class Kernel:
    def __init__(self, manager: Any, client: Any) -> None:
        self.manager, self.client = manager, client
        self.code = ClientKernel(client)

    async def cell(self, source: str) -> None:
        reply = await self.client.execute_interactive(source, timeout=900,
                                                      output_hook=lambda _m: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {reply['content'].get('evalue')}\n{source}")

    async def value(self, expression: str) -> Any:
        """`expression` evaluated in the kernel (a Python literal's repr)."""
        reply = await self.client.execute_interactive(
            "", user_expressions={"v": expression}, timeout=60, output_hook=lambda _m: None)
        return ast.literal_eval(reply["content"]["user_expressions"]["v"]["data"]["text/plain"])

    async def memory_mib(self) -> tuple[float, float, float]:
        """The kernel's resident memory now, at its peak and all it has faulted in (minor
        page faults, 4 KiB each), in MiB."""
        now, peak, faults = await self.value(
            "(int(open('/proc/self/statm').read().split()[1]), "
            "__import__('resource').getrusage(0).ru_maxrss // 4, "
            "__import__('resource').getrusage(0).ru_minflt)")
        return now * 4 / 1024, peak * 4 / 1024, faults * 4 / 1024

    async def stop(self) -> None:
        self.client.stop_channels()
        await self.manager.shutdown_kernel(now=True)


async def start_kernel(work: Path, env: dict[str, str]) -> Kernel:
    manager = jupyter_client.manager.AsyncKernelManager(
        kernel_name=KERNEL_NAME,
        connection_file=str(work / "runtime" / f"kernel-{uuid.uuid4()}.json"))
    await manager.start_kernel(env=env, cwd=str(work))
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    return Kernel(manager, client)


def state_cell(mib: int, seed: int = 0) -> str:
    each = mib * MIB // 4 // 8
    return ("import numpy as np, pandas as pd\n"
            + "".join(f"a{i} = np.random.default_rng({seed * 10 + i}).random({each})\n"
                      for i in range(4))
            + f"df = pd.DataFrame({{'k': range(20000), 'v': [str(i + {seed}) for i in "
            "range(20000)]})\n"
            "counter = 0\nlabels = {'run': 'bench', 'tags': list(range(100))}\n")


async def timed(coro: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


def dump_cell(dill_file: Path) -> str:
    return ("import dill, os, time\n"
            "_names = [n for n in dir() if not n.startswith('_') and n not in "
            "('In', 'Out', 'get_ipython', 'exit', 'quit', 'open', 'dill', 'os', 'time')]\n"
            f"with open({str(dill_file)!r}, 'wb') as _f:\n"
            "    dill.dump({n: globals()[n] for n in _names}, _f)\n"
            "    _f.flush(); os.fsync(_f.fileno())\n")


async def bench_size(work: Path, env: dict[str, str], mib: int, repeat: int) -> dict[str, float]:
    folder = work / f"state-{mib}"
    folder.mkdir()
    notebook = folder / "bench.ipynb"
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}))
    dill_file = folder / "baseline.dill"
    # As the server creates it before the first checkpoint (`StorageKeeper.writing`).
    database_path(notebook, work).parent.mkdir(parents=True, exist_ok=True)
    prepare_database(database_path(notebook, work))
    runs: dict[str, list[float]] = {"checkpoint_s": [], "dill_dump_s": [], "restore_s": [],
                                    "dill_load_s": [], "attach_s": [], "restore_peak_mib": [],
                                    "dill_load_peak_mib": [], "restore_faulted_mib": [],
                                    "dill_load_faulted_mib": [], "checkpoint_faulted_mib": [],
                                    "dill_dump_faulted_mib": []}
    a = await start_kernel(work, env)
    try:
        for run in range(repeat):
            # New values each run: the checkpoint stores everything again (a full one).
            await a.cell(state_cell(mib, seed=run))
            if run == 0:  # kishu's import and set-up, once per kernel
                await attach(a.code, notebook, workspace=work)
            before = await a.memory_mib()
            seconds, _ = await timed(checkpoint(a.code, notebook, workspace=work))
            runs["checkpoint_s"].append(seconds)
            after = await a.memory_mib()
            runs["checkpoint_faulted_mib"].append(after[2] - before[2])
            seconds, _ = await timed(a.cell(dump_cell(dill_file)))
            runs["dill_dump_s"].append(seconds)
            runs["dill_dump_faulted_mib"].append((await a.memory_mib())[2] - after[2])
        dill_bytes = dill_file.stat().st_size
        growth = []
        changes = ["counter += 1", "a2[::1000] += 1.0", "extra = {'note': 'new variable'}"]
        for change in changes:
            await a.cell(change)
            size = database_path(notebook, work).stat().st_size
            seconds, again = await timed(checkpoint(a.code, notebook, workspace=work))
            growth.append((change, seconds, again.database_bytes - size))
        await a.cell(dump_cell(dill_file))  # the same variables as the latest checkpoint
        db_bytes = database_path(notebook, work).stat().st_size
    finally:
        await a.stop()
    for _ in range(repeat):
        b = await start_kernel(work, env)
        c = await start_kernel(work, env)
        try:
            seconds, _ = await timed(attach(b.code, notebook, workspace=work))
            runs["attach_s"].append(seconds)
            before = await b.memory_mib()
            seconds, outcome = await timed(restore(b.code, notebook, None, workspace=work))
            assert outcome.ok, outcome
            runs["restore_s"].append(seconds)
            after = await b.memory_mib()
            runs["restore_peak_mib"].append(after[1] - before[0])
            runs["restore_faulted_mib"].append(after[2] - before[2])
            await c.cell("import dill")
            before = await c.memory_mib()
            load = f"with open({str(dill_file)!r}, 'rb') as _f:\n" \
                   "    globals().update(dill.load(_f))\n"
            seconds, _ = await timed(c.cell(load))
            runs["dill_load_s"].append(seconds)
            after = await c.memory_mib()
            runs["dill_load_peak_mib"].append(after[1] - before[0])
            runs["dill_load_faulted_mib"].append(after[2] - before[2])
        finally:
            await b.stop()
            await c.stop()
    figures = {name: statistics.median(values) for name, values in runs.items()}
    print(f"\n== {mib} MiB of state (4 numpy arrays, a DataFrame, small values), "
          f"median of {repeat} ==")
    print(f"attach in a fresh kernel (kishu import and set-up, once per kernel): "
          f"{figures['attach_s']:.2f} s, not counted below")
    save_ratio = figures["checkpoint_s"] / figures["dill_dump_s"]
    load_ratio = figures["restore_s"] / figures["dill_load_s"]
    print(f"checkpoint (full)        {figures['checkpoint_s']:8.2f} s   dill dump+fsync "
          f"{figures['dill_dump_s']:6.2f} s   ratio {save_ratio:5.2f}")
    print(f"restore (fresh kernel)   {figures['restore_s']:8.2f} s   dill load       "
          f"{figures['dill_load_s']:6.2f} s   ratio {load_ratio:5.2f}")
    for what, ours, dills in (
            ("checkpoint's memory faulted in", "checkpoint_faulted", "dill_dump_faulted"),
            ("restore's peak memory", "restore_peak", "dill_load_peak"),
            ("restore's memory faulted in", "restore_faulted", "dill_load_faulted")):
        mine, theirs = figures[f"{ours}_mib"], figures[f"{dills}_mib"]
        print(f"{what:30} {mine:5.0f} MiB   dill {theirs:5.0f} MiB   ratio "
              f"{mine / max(theirs, 1.0):5.2f}")
    for change, seconds, grew in growth:
        print(f"  after {change!r:38} checkpoint {seconds:6.2f} s, database +{grew / MIB:8.2f} MiB")
    print(f"database {db_bytes / MIB:8.1f} MiB after {repeat + 3} checkpoints; live state "
          f"{mib} MiB; one dill file {dill_bytes / MIB:.1f} MiB")
    figures["save_ratio"], figures["load_ratio"] = save_ratio, load_ratio
    return figures


def kernel_environment(work: Path) -> dict[str, str]:
    """Set up `work` for the bench's kernels (their kernelspec, runtime folder and kishu
    home) and return the environment they start with."""
    (work / "runtime").mkdir()
    spec = work / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bench", "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(work / "jupyter")
    os.environ["IPYTHONDIR"] = str(work / "ipython")
    root = work / "kishu-root"
    prepare_kishu_home(root)
    return dict(os.environ, HOME=str(work), **kishu_environment(root))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 MiB only")
    parser.add_argument("--sizes", default="50,500,2048", help="state sizes in MiB")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per size below 2 GiB (one run from 2 GiB up)")
    parser.add_argument("--dir", help="where the notebooks and files go (default: a "
                        "temporary folder)")
    args = parser.parse_args()
    sizes = [50] if args.quick else [int(size) for size in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="gpushift-bench-", dir=args.dir))
    results: dict[int, dict[str, float]] = {}
    try:
        env = kernel_environment(work)
        print(f"kernels: {sys.executable}; files in {work}")
        for mib in sizes:
            results[mib] = await bench_size(work, env, mib, 1 if mib >= 2048 else args.repeat)
            shutil.rmtree(work / f"state-{mib}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    for mib, figures in results.items():
        print(f"{mib:5} MiB: checkpoint {figures['save_ratio']:5.2f}x dill dump, restore "
              f"{figures['load_ratio']:5.2f}x dill load (issue 16 target: each <= 1.50x)")


if __name__ == "__main__":
    asyncio.run(main())
