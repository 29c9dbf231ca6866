"""Time whole moves, phase by phase, on the local control plane — the product as the
end-to-end tests run it (chart, webhook, local pod runner, real sidecar, real JupyterLab
with the server extension, real kernels and kishu), the bench acting as the browser.

    .venv/bin/python bench/e2e_migration.py [--runs 5] [--sizes 50,500] [--notebooks 1]
    .venv/bin/python bench/e2e_migration.py --sizes 50 --notebooks 1,2,4
    .venv/bin/python bench/e2e_migration.py --notebook-env GPUSHIFT_WARM_KERNELS=0  # a feature off
    .venv/bin/python bench/e2e_migration.py --runs 3 --sizes 50 --cpu  # who used the CPU

For each state size and number of open notebooks, one Notebook server is moved `--runs`
times, GPU and CPU in turn, each time with fresh state of that size in every notebook's
kernel (a numpy array, a DataFrame, a class instance) and, on the way to a GPU, a held
cell in the first notebook. Every notebook is saved before the move and restored after
it. Phases of one move (from the migration's history and the restore's answer):

* checkpoint — every notebook's kishu commit made and verified (`checkpointing` →
  `checkpointed`: `/migrate` answers at once, the server saves meanwhile);
* patch — the sidecar patches the Notebook (`checkpointed` → `recreating`);
* pod recreated — old pod stopped, new one scheduled (instant here: kwok), the runner
  starts its sidecar, which finds the migration (`recreating` → `restoring`); of it,
  ..old server's exit — the old pod's JupyterLab (and its kernels) from SIGTERM to its
  exit: the user's server using the pod's grace period, which is Kubernetes' (the local
  pod runner's record of the stop);
* server back — from `restoring` until the new pod's JupyterLab answers through the
  notebook's URL with the migration visible;
* kernel — the first notebook's session on the new pod;
* restore — every notebook's checkpoint loaded into its kernel, all at once (the server
  extension's figure; the first notebook's answer comes when all are back); and the
  first notebook's in parts: ..kernel — its kernel started (a new pod has none),
  ..ready — the kernel's client ready and the database's lock taken, ..import — kishu
  imported in the kernel, ..install — the rest of gpushift's kernel-side modules'
  install in it, ..attach — attached, ..read — the variables' chunks read from
  the database, ..unpickle — unpickled, ..hash — kishu's HEAD moved and the thread
  started that takes kishu's IdGraphs of the restored variables after the answer (the
  rest is the operations' round trips); ..hash wait — how long the first execution
  after the restore (the held cell, on a move to the GPU) waited for that thread;
* held cell — the pending cell run on the new pod, until its output arrived;
* start to variables — from the new pod's notebook container's start (the runner's
  record) to the end of the restore: every notebook's kernel holds its variables
  (issue 16: within 3 s plus the restore's own read and unpickle);
* total — from "Move" to the held cell's output: what the user waits for.

After each state size's moves (one open notebook), the first notebook's newest
checkpoint is restored again the way `bench/checkpoint_kishu.py` restores — a fresh
kernel on this machine, kishu attached first, `restore` timed — `--runs` times. Beside
it, with their ratio (issue 16: the end-to-end restore within 1.2x of the bench's):
`move: restore, own` — the move's restore without what the kishu bench leaves out
(..kernel, ..ready, ..import, ..install, ..attach: its kernel installed and attached
before the timed restore) against `bench: restore`; and `move: restore I/O` — ..read,
..unpickle and ..hash — against the same parts of the bench's restore.

The overhead is everything except the checkpoint and restore (scheduling is instant
here), as earlier rounds printed it. gpushift's overhead is stricter about the restore
and leaves out what is Kubernetes' (issue 16): the total less the checkpoint, less only
the restore's I/O (..read and ..unpickle: the new kernel's start and kishu's import in
it count as overhead) and less the old server's exit (the old pod's grace period).
Prints every move, then p50 and max per phase and size.

With `--cpu`, a thread samples every process's CPU time (`gpushift_testing.cpu_use`, a
few per cent of a core) and each move also prints the CPU seconds each part of the
system used from `recreating` to the end of the restore (the old pod's exit, the new
pod's start, the restore; `bench` is this process: the client, the local pod runner and
the notebook proxy), and `cpu: busy cores`: their total over that wall time. Near
the machine's core count, the new pod's start is bound by CPU, not by waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testing"))
import checkpoint_kishu  # noqa: E402  (this folder: the kishu bench's kernels)
from gpushift_testing import e2e  # noqa: E402
from gpushift_testing.binaries import missing_binaries  # noqa: E402
from gpushift_testing.controlplane import ControlPlane  # noqa: E402
from gpushift_testing.cpu_use import CpuSampler  # noqa: E402
from gpushift_testing.jupyter_user import JupyterUser  # noqa: E402
from gpushift_testing.kube import wait_for  # noqa: E402
from gpushift_testing.pod_runner import PodRunner  # noqa: E402
from kubernetes import client  # noqa: E402

from gpushift_jupyter.kernel_state import attach, restore  # noqa: E402

IO_PARTS = ("read", "unpickle", "hash")
"""The restore's parts that load the variables (the rest starts the kernel and kishu)."""
BESIDE_BENCH = {"move: restore, own": "bench: restore",
                "move: restore I/O": "bench: restore I/O"}
"""The move's restore beside the same checkpoint's restored the kishu bench's way
(`bench_restores`): less the new kernel's start, its readiness, kishu's import, the
kernel-side modules' install and kishu's attach (`own_restore`), which the kishu bench
leaves out too; and the parts in `IO_PARTS` alone."""
PHASES = ["checkpoint", "patch", "pod recreated", " ..old server's exit", "server back",
          "kernel", "restore", " ..kernel", " ..ready", " ..import", " ..install", " ..attach",
          " ..read", " ..unpickle", " ..hash", " ..hash wait", "held cell", "start to variables",
          "total", "overhead", "gpushift's overhead",
          *(name for pair in BESIDE_BENCH.items() for name in pair)]
RESTORE_PARTS = {" ..kernel": "kernel", " ..ready": "ready", " ..import": "import",
                 " ..install": "install", " ..attach": "attach", " ..read": "read",
                 " ..unpickle": "unpickle", " ..hash": "hash"}
"""The first notebook's restore, in parts (its answer's `seconds`)."""
HELD_CELL = 'device = "cuda"\nprint(round(float(big.sum()), 3))'
# How long the first execution after the restore (the held cell, on a move to the GPU)
# waited for kishu's IdGraphs of the restored variables, taken in a thread after the
# restore's answer (server_ext/gpushift_jupyter/kernel_state/restored_hashes.py).
HASH_WAIT = "print(__import__('sys').modules['_gpushift_restored_hashes'].waited_s)"


def unit(figure: str) -> str:
    """Seconds, but for the busy cores (a count)."""
    return "" if figure == "cpu: busy cores" else "s"


def state_cell(mib: int) -> str:
    return (f"import numpy as np, pandas as pd\n"
            f"big = np.random.default_rng().random({mib} * 2**20 // 8)\n"
            "frame = pd.DataFrame({'a': np.arange(10_000), 'b': np.arange(10_000) * 0.5})\n"
            "class Model:\n    def __init__(self, w): self.w = w\nmodel = Model(3)\n")


async def seen_arrived(user: JupyterUser, migration_id: str, timeout: float) -> float:
    """When the new pod's server first shows the migration arrived (epoch s):
    `restoring`, or `done` when that server restored it by itself before this look."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            status, answer = await user.gpushift("GET", "migration", timeout=5)
            m = answer.get("migration") if status == 200 else None
            if m and m["id"] == migration_id:
                if m["phase"] in ("restoring", "done"):
                    return time.time()
                if not m["active"]:
                    raise RuntimeError(f"the move ended {m['phase']}: {m['error']}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"migration {migration_id} not restoring in {timeout}s")


def notebook_paths(count: int) -> list[str]:
    return ["work.ipynb"] + [f"other-{i}.ipynb" for i in range(1, count)]


def old_server_exit(runner: PodRunner, recreating: float, restoring: float) -> float:
    """Seconds the old pod's main containers took from SIGTERM to exit, in the move
    that was `recreating` .. `restoring` (the runner's record of the stop)."""
    for pod in reversed(runner.stopped_pods):
        mains = [times for name, times in pod.stop_times.items()
                 if not next(c for c in pod.plan.containers if c.name == name).sidecar]
        if mains and recreating - 1 <= min(b for b, _ in mains) <= restoring:
            return max(e for _, e in mains) - min(b for b, _ in mains)
    raise LookupError("the runner stopped no pod during the move")


def notebook_started(runner: PodRunner) -> float:
    """When the running pod's notebook container started (epoch seconds)."""
    [pod] = runner.local_pods()
    [main] = [p for p in pod.processes if not p.plan.sidecar]
    return float(main.started_wall)


async def one_move(user: JupyterUser, runner: PodRunner, kernel: str, target: str,
                   mib: int, notebooks: int = 1,
                   cpu: CpuSampler | None = None) -> tuple[str, dict[str, float]]:
    kernels = [kernel] + [await user.open_notebook(p) for p in notebook_paths(notebooks)[1:]]
    for each in kernels:
        done = await user.execute(each, state_cell(mib), timeout=600)
        assert done.status == "ok", done.error
    cell = {"cell_id": "held", "code": HELD_CELL} if target == "gpu" else None
    started = time.time()
    status, moved = await user.gpushift("POST", "migrate", {
        "target": target, "reason": "manual", "kernel_id": kernel, "path": "work.ipynb",
        "pending_cell": cell}, timeout=600)
    assert status == 202, moved
    back = await seen_arrived(user, moved["migration"]["id"], 300)
    t0 = time.monotonic()
    fresh = await user.open_notebook("work.ipynb")
    kernel_s = time.monotonic() - t0
    status, restored = await e2e.restore_state(user, fresh, "work.ipynb", 600)
    assert status == 200 and restored["ok"], restored
    held = 0.0
    ended = time.time()
    if restored["pending_cell"]:
        ran = await user.execute(fresh, restored["pending_cell"]["code"])
        assert ran.status == "ok" and ran.output_at, ran
        # Until its output arrived (what the user waits for), not the connection's close.
        held, ended = ran.output_at - ended, ran.output_at
    total = ended - started
    waited = await user.execute(fresh, HASH_WAIT)
    assert waited.status == "ok", waited.error
    for path in notebook_paths(notebooks)[1:]:  # restored by the server, each its own
        other = await user.open_notebook(path)
        there = await user.execute(other, "print(big.size)")
        assert there.status == "ok" and int(there.stdout) == mib * 2**20 // 8, there
    at = e2e.phase_times(restored["migration"])
    figures = {
        # /migrate answers at once: the save and its verification are `checkpointing`.
        "checkpoint": at["checkpointed"] - at["checkpointing"],
        "patch": at["recreating"] - at["checkpointed"],
        "pod recreated": at["restoring"] - at["recreating"],
        " ..old server's exit": old_server_exit(runner, at["recreating"], at["restoring"]),
        "server back": max(0.0, back - at["restoring"]),
        "kernel": kernel_s,
        "restore": restored["elapsed_ms"] / 1000,
        " ..hash wait": float(waited.stdout),
        "held cell": held,
        "start to variables": restored["restored_at"] - notebook_started(runner),
        "total": total,
    }
    parts = restored.get("seconds") or {}
    for phase, part in RESTORE_PARTS.items():
        figures[phase] = float(parts.get(part) or 0.0)
    figures["overhead"] = total - figures["checkpoint"] - figures["restore"]
    io = float(parts.get("read") or 0.0) + float(parts.get("unpickle") or 0.0)
    figures["gpushift's overhead"] = (total - figures["checkpoint"] - io
                                      - figures[" ..old server's exit"])
    if cpu is not None:  # from `recreating` to the end of the restore
        used = cpu.used(at["recreating"], restored["restored_at"])
        figures.update({f"cpu: {part}": seconds for part, seconds in sorted(
            used.items(), key=lambda item: -item[1])})
        figures["cpu: busy cores"] = used["total"] / (restored["restored_at"]
                                                      - at["recreating"])
    return fresh, figures


def own_restore(figures: dict[str, float]) -> float:
    """The move's restore less the new kernel's start, its client's readiness, kishu's
    import, the kernel-side modules' install and kishu's attach, which
    `checkpoint_kishu.py`'s restore does not time either (its kernel did them in the
    attach before it)."""
    return figures["restore"] - sum(figures[part] for part in (
        " ..kernel", " ..ready", " ..import", " ..install", " ..attach"))


@contextlib.contextmanager
def restored_environ(names: tuple[str, ...]) -> Iterator[None]:
    """`os.environ`'s `names` as they were, after the block (the kishu bench's kernel
    setup points JUPYTER_PATH and IPYTHONDIR at its folder)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def bench_restores(workspace: Path, folder: Path, runs: int) -> list[tuple[float, float]]:
    """`runs` restores of the first notebook's newest checkpoint on `workspace`, the kishu
    bench's way: a fresh kernel on this machine, attached (kishu imported) first, then
    `restore` timed. Each: (seconds, of them the parts in `IO_PARTS`)."""
    notebook = workspace / notebook_paths(1)[0]
    timings: list[tuple[float, float]] = []
    folder.mkdir()
    with restored_environ(("JUPYTER_PATH", "IPYTHONDIR")):
        env = checkpoint_kishu.kernel_environment(folder)
        for _ in range(runs):
            kernel = await checkpoint_kishu.start_kernel(folder, env)
            try:
                await attach(kernel.code, notebook, workspace=workspace)
                took, outcome = await checkpoint_kishu.timed(restore(
                    kernel.code, notebook, None, workspace=workspace))
                assert outcome.ok, outcome
                timings.append((took, sum(outcome.seconds.get(p, 0.0) for p in IO_PARTS)))
            finally:
                await kernel.stop()
    return timings


async def bench_size(plane: ControlPlane, admin: Any, work: Path, mib: int,
                     runs: int, notebooks: int = 1, env: dict[str, str] | None = None,
                     cpu: CpuSampler | None = None) -> list[dict[str, float]]:
    namespace = f"bench-{mib}-{notebooks}-{uuid.uuid4().hex[:5]}"
    admin.core.create_namespace({"metadata": {"name": namespace}})
    results = []
    with e2e.notebook(plane, admin, namespace, work / namespace, env=env) as nb:
        async with nb.user() as user:
            await user.wait_until_up(180)
            for path in notebook_paths(notebooks):
                await user.ok("PUT", f"api/contents/{path}", {
                    "type": "notebook", "format": "json",
                    "content": __import__("json").loads(e2e.empty_notebook())})
            kernel = await user.open_notebook("work.ipynb")
            await user.gpushift("POST", "attach", {"kernel_id": kernel, "path": "work.ipynb"})
            for run in range(runs):
                target = "gpu" if run % 2 == 0 else "cpu"
                kernel, figures = await one_move(user, nb.runner, kernel, target, mib,
                                                 notebooks, cpu)
                results.append(figures)
                print(f"{mib:4d} MiB x{notebooks} move {run + 1} to {target}: " + ", ".join(
                    f"{k} {v:.2f}{unit(k)}" for k, v in figures.items()), flush=True)
    if notebooks == 1:  # the pod is stopped: its database is free
        alone = await bench_restores(nb.workspace, work / f"{namespace}-restores", runs)
        for figures, (seconds, io) in zip(results, alone, strict=True):
            figures["move: restore, own"] = own_restore(figures)
            figures["move: restore I/O"] = sum(figures[f" ..{p}"] for p in IO_PARTS)
            figures["bench: restore"], figures["bench: restore I/O"] = seconds, io
        print(f"{mib:4d} MiB: the kishu bench's restore of the last checkpoint: " + ", ".join(
            f"{seconds:.2f}s (I/O {io:.2f}s)" for seconds, io in alone), flush=True)
    # The fake GPU node has one GPU: the next size's notebook needs it.
    admin.core.delete_namespace(namespace)
    wait_for("the notebook's pod gone", lambda: not admin.core.list_namespaced_pod(
        namespace).items, 120)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="50,500", help="state sizes in MiB, comma-separated")
    ap.add_argument("--notebooks", default="1",
                    help="numbers of open notebooks, comma-separated (each with the state)")
    ap.add_argument("--notebook-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable of the notebook container (repeatable), "
                         "e.g. GPUSHIFT_WARM_KERNELS=0 to compare with a gpushift feature off")
    ap.add_argument("--cpu", action="store_true",
                    help="also print the CPU each part of the system used in each move")
    args = ap.parse_args()
    env = dict(item.split("=", 1) for item in args.notebook_env)
    counts = [int(n) for n in args.notebooks.split(",")]
    if missing_binaries():
        print("control plane binaries missing: run hack/build-controlplane.sh", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="gpushift-e2e-bench-") as tmp:
        work = Path(tmp)
        plane = ControlPlane(work / "cp").start()
        hook = None
        cpu = CpuSampler().start() if args.cpu else None
        try:
            api = plane.api_client()
            admin = type("Admin", (), {"core": client.CoreV1Api(api),
                                       "custom": client.CustomObjectsApi(api),
                                       "rbac": client.RbacAuthorizationV1Api(api)})
            hook = e2e.start_webhook(plane, work / "webhook")
            table = {(mib, n): asyncio.run(bench_size(plane, admin, work, mib, args.runs, n, env,
                                                      cpu))
                     for mib in sizes for n in counts}
        finally:
            if cpu is not None:
                cpu.stop()
            if hook is not None:
                hook.stop()
            plane.stop()
    print(f"\n{'phase':21s}" + "".join(f"{f'{m}Mx{n} p50':>12s}{f'{m}Mx{n} max':>12s}"
                                      for m, n in table))
    cpu_rows = sorted({k for runs in table.values() for r in runs for k in r} - set(PHASES))
    for phase in PHASES + cpu_rows:
        row = f"{phase:21s}"
        for runs in table.values():
            values = [r.get(phase, 0.0) for r in runs]
            row += (f"{statistics.median(values):11.2f}{unit(phase) or ' '}"
                    f"{max(values):11.2f}{unit(phase) or ' '}")
        print(row)
    print("(columns: state size in MiB x open notebooks, each notebook with that state)")
    for (mib, n), runs in table.items():
        if n != 1 or not runs or "bench: restore" not in runs[0]:
            continue
        for move_figure, bench_figure in BESIDE_BENCH.items():
            move = statistics.median(r[move_figure] for r in runs)
            alone = statistics.median(r[bench_figure] for r in runs)
            print(f"{mib} MiB: {move_figure} p50 {move:.2f} s, {bench_figure} p50 "
                  f"{alone:.2f} s: {move / alone:.2f}x (issue 16: the move's restore within "
                  "1.2x of the bench's)")
    print("\noverhead = total - checkpoint - restore (scheduling is instant here); "
          "gpushift's overhead = total - checkpoint - the restore's read and unpickle - "
          "the old server's exit (the old pod's grace period, Kubernetes'); target: "
          "2 s p50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
