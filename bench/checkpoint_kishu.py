"""Checkpoint and restore of a kernel's state with gpushift's kishu driver, against a
baseline of plain `dill` (dump the same variables to a file on the same disk, fsync, and
load them in a fresh kernel), in the same run, with real kernels.

For each state size (50 MiB and 500 MiB; `--quick`: 50 MiB only) it prints:
- first checkpoint (everything stored) and restore into a fresh kernel process,
  against dill dump and dill load;
- three incremental changes (a small variable, one of the four arrays modified in
  place, a new small variable), each followed by a checkpoint: its time and how much
  the database grew;
- the database size over the live state, and over one dill file of it.

    .venv/bin/python bench/checkpoint_kishu.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jupyter_client

from gpushift_jupyter.kernel_state import (
    ClientKernel,
    attach,
    checkpoint,
    database_path,
    kishu_environment,
    prepare_kishu_home,
    restore,
)

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

    async def stop(self) -> None:
        self.client.stop_channels()
        await self.manager.shutdown_kernel(now=True)


async def start_kernel(work: Path, env: dict[str, str]) -> Kernel:
    manager = jupyter_client.AsyncKernelManager(
        kernel_name=KERNEL_NAME,
        connection_file=str(work / "runtime" / f"kernel-{uuid.uuid4()}.json"))
    await manager.start_kernel(env=env, cwd=str(work))
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    return Kernel(manager, client)


def state_cell(mib: int) -> str:
    each = mib * MIB // 4 // 8
    return ("import numpy as np, pandas as pd\n"
            + "".join(f"a{i} = np.random.default_rng({i}).random({each})\n" for i in range(4))
            + "df = pd.DataFrame({'k': range(20000), 'v': [str(i) for i in range(20000)]})\n"
            "counter = 0\nlabels = {'run': 'bench', 'tags': list(range(100))}\n")


async def timed(coro: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def bench_size(work: Path, env: dict[str, str], mib: int) -> dict[str, float]:
    folder = work / f"state-{mib}"
    folder.mkdir()
    notebook = folder / "bench.ipynb"
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}))
    dill_file = folder / "baseline.dill"
    figures: dict[str, float] = {}
    a = await start_kernel(work, env)
    try:
        await a.cell(state_cell(mib))
        # kishu's import and set-up, once per kernel (the server can do it at start).
        figures["attach_s"], _ = await timed(attach(a.code, notebook))
        figures["checkpoint_s"], saved = await timed(checkpoint(a.code, notebook, workspace=work))
        figures["db_first_bytes"] = saved.database_bytes
        dump = ("import dill, os, time\n"
                "_names = [n for n in dir() if not n.startswith('_') and n not in "
                "('In', 'Out', 'get_ipython', 'exit', 'quit', 'open', 'dill', 'os', 'time')]\n"
                f"with open({str(dill_file)!r}, 'wb') as _f:\n"
                "    dill.dump({n: globals()[n] for n in _names}, _f)\n"
                "    _f.flush(); os.fsync(_f.fileno())\n")
        figures["dill_dump_s"], _ = await timed(a.cell(dump))
        figures["dill_bytes"] = dill_file.stat().st_size
        growth = []
        changes = ["counter += 1", "a2[::1000] += 1.0", "extra = {'note': 'new variable'}"]
        for change in changes:
            await a.cell(change)
            before = database_path(notebook, work).stat().st_size
            seconds, again = await timed(checkpoint(a.code, notebook, workspace=work))
            growth.append((change, seconds, again.database_bytes - before))
        figures["db_bytes"] = database_path(notebook, work).stat().st_size
    finally:
        await a.stop()
    b = await start_kernel(work, env)
    c = await start_kernel(work, env)
    try:
        figures["attach_restore_s"], _ = await timed(attach(b.code, notebook))
        figures["restore_s"], outcome = await timed(restore(b.code, notebook, None, workspace=work))
        assert outcome.ok, outcome
        load = f"import dill\nwith open({str(dill_file)!r}, 'rb') as _f:\n" \
               "    globals().update(dill.load(_f))\n"
        figures["dill_load_s"], _ = await timed(c.cell(load))
    finally:
        await b.stop()
        await c.stop()
    print(f"\n== {mib} MiB of state (4 numpy arrays, a DataFrame, small values) ==")
    print(f"attach (kishu import and set-up, once per kernel): {figures['attach_s']:.2f} s "
          f"(fresh kernel for the restore: {figures['attach_restore_s']:.2f} s), not "
          "counted below")
    save_ratio = figures["checkpoint_s"] / figures["dill_dump_s"]
    load_ratio = figures["restore_s"] / figures["dill_load_s"]
    print(f"checkpoint (first, full) {figures['checkpoint_s']:8.2f} s   dill dump+fsync "
          f"{figures['dill_dump_s']:6.2f} s   ratio {save_ratio:5.2f}")
    print(f"restore (fresh kernel)   {figures['restore_s']:8.2f} s   dill load       "
          f"{figures['dill_load_s']:6.2f} s   ratio {load_ratio:5.2f}")
    for change, seconds, grew in growth:
        print(f"  after {change!r:38} checkpoint {seconds:6.2f} s, database +{grew / MIB:8.2f} MiB")
    print(f"database {figures['db_bytes'] / MIB:8.1f} MiB after 4 checkpoints; live state "
          f"{mib} MiB (ratio {figures['db_bytes'] / MIB / mib:4.2f}); one dill file "
          f"{figures['dill_bytes'] / MIB:.1f} MiB (ratio "
          f"{figures['db_bytes'] / figures['dill_bytes']:4.2f})")
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
    parser.add_argument("--dir", help="where the notebooks and files go (default: a "
                        "temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpushift-bench-", dir=args.dir))
    try:
        env = kernel_environment(work)
        print(f"kernels: {sys.executable}; files in {work}")
        for mib in [50] if args.quick else [50, 500]:
            await bench_size(work, env, mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
