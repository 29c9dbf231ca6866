"""The new pod's side of a move: restore the state of every notebook the move saved, each
into its notebook's kernel, and tell the sidecar how it went.

One restore per move: the server's own loop (`server_restore`) and a browser's
`POST /restore` both call `restore_move`; whichever comes first restores every notebook,
each into its own kernel and all at once (the others wait for it and get its answer: a
watching browser is answered the moment the state is back, not at its next poll), and
what it did is kept (`ServerRestore`) for every browser that asks later — what came
back in its notebook, into which kernel, when — instead of restoring again. The held
cell goes to the first browser of its notebook, once, and only after a restore that
succeeded there.

A restore that fails reports `ok: false` to the sidecar (the migration ends failed, the
checkpoints stay on the volume). A move that ended badly after its pod was replaced is
recovered here once per pod, into the notebook's fresh kernel, when a browser asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import KernelStateError, restore
from gpushift_jupyter.kernels import KernelRegistry
from gpushift_jupyter.pod_sessions import notebook_kernel
from gpushift_jupyter.sidecar_client import SidecarClient
from gpushift_jupyter.storage import StorageKeeper

log = logging.getLogger("gpushift.jupyter")

# A move that ended without reaching `done` after the old pod was replaced: the new pod's
# kernel is empty, and the checkpoint on the volume is all that is left of its state.
_REPLACED = frozenset({"recreating", "restoring"})
_ENDED_BADLY = frozenset({"rolled_back", "failed"})


def recoverable(migration: dict[str, Any] | None) -> bool:
    """A migration that ended rolled back or failed after its pod was replaced, with a
    checkpoint: this pod's fresh kernel can get the state back from it."""
    if migration is None or migration.get("phase") not in _ENDED_BADLY:
        return False
    phases = {h.get("phase") for h in migration.get("history") or []}
    return bool(migration.get("checkpoint")) and bool(phases & _REPLACED)


def checkpoints_of(migration: dict[str, Any]) -> list[dict[str, Any]]:
    """Every checkpoint of a migration record: the asking notebook's first (pure)."""
    first = migration.get("checkpoint")
    return ([first] if isinstance(first, dict) else []) + [
        c for c in migration.get("other_checkpoints") or [] if isinstance(c, dict)]


def overall_report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One report for the sidecar from each notebook's (pure): ok when every notebook's
    is; with several notebooks, names are `<notebook>: <name>`."""
    several = len(results) > 1

    def named(notebook: str, name: str) -> str:
        return f"{notebook}: {name}" if several else name

    failed = [f"{nb}: {r['detail']}" if several else str(r["detail"])
              for nb, r in results.items() if not r["ok"]]
    notes = [f"{nb}: {r['detail']}" if several else str(r["detail"])
             for nb, r in results.items() if r["ok"] and r.get("detail")]
    return {"ok": not failed,
            "restored": [named(nb, n) for nb, r in results.items() for n in r["restored"]],
            "not_restored": [{"name": named(nb, x["name"]), "reason": x["reason"]}
                             for nb, r in results.items() for x in r["not_restored"]],
            "detail": "; ".join(failed or notes) or None}


@dataclass
class ServerRestore:
    """A move's state, restored by this server (every notebook of the move)."""

    migration_id: str
    notebooks: dict[Path, tuple[str, dict[str, Any]]]
    """Notebook -> (the kernel its state went into, that notebook's restore answer)."""
    report: dict[str, Any]
    """What the sidecar is told (every notebook's, in one report)."""
    answer: dict[str, Any]
    """The whole move's report (what the sidecar was told), for a move without a
    checkpoint or a browser of a notebook the move did not save."""
    pending_cell: dict[str, Any] | None
    """The held cell, until a browser of its notebook takes it (once)."""
    at: float
    """Epoch seconds at which the restore ended."""
    seen: bool = False
    """A browser has collected the answer."""
    by: str = "server"
    """Who restored it: "server" (its own loop) or "browser" (a `POST /restore`)."""
    reported: bool = False
    """The sidecar was told (the move ended there)."""


class MoveRestorer:
    def __init__(self, kernels: KernelRegistry, sidecar: SidecarClient,
                 storage: StorageKeeper | None = None) -> None:
        self.kernels = kernels
        self.sidecar = sidecar
        self.storage = storage or StorageKeeper(None, None, kernels.root_dir)
        """Holds the notebook's database while a restore reads it (no prune then)."""
        self.recovered: set[str] = set()
        """Ids of ended migrations whose state this server (this pod) restored already."""
        self.done: dict[str, ServerRestore] = {}
        """Moves this server restored, by migration id."""
        self._restoring: set[str] = set()
        """Migrations (or notebooks, without a sidecar) whose restore runs now: one at a
        time, so two tabs never restore the same state twice into the kernel."""
        self._moves_in_flight: dict[str, asyncio.Future[ServerRestore | None]] = {}
        """Moves whose `restore_move` runs now, by migration id: resolved with what it
        did (None when it failed), for the requests that wait on it."""

    async def current(self) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = await self.sidecar.get("/migrations/current")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return answer

    async def current_for_browser(self) -> dict[str, Any] | None:
        """`GET /migration`: the sidecar's record, with the notebook of its checkpoint
        and pending cell also as `path` relative to the server root (as the browser
        names notebooks), `recoverable` (see `recoverable`) and `restored_on_server`."""
        migration = await self.current()
        if migration is None:
            return None
        shown = dict(migration)
        for key in ("checkpoint", "pending_cell"):
            part = migration.get(key)
            if isinstance(part, dict) and isinstance(part.get("notebook_path"), str):
                shown[key] = {**part,
                              "path": self.kernels.relative(Path(part["notebook_path"]))}
        shown["other_checkpoints"] = [
            {**c, "path": self.kernels.relative(Path(str(c.get("notebook_path"))))}
            for c in migration.get("other_checkpoints") or [] if isinstance(c, dict)]
        done = self.done.get(str(migration["id"]))
        shown["recoverable"] = (recoverable(migration) and migration["id"] not in self.recovered
                                and done is None)
        shown["restored_on_server"] = done is not None and not done.seen
        return shown

    async def restore(self, kernel_id: str, path: str | None) -> dict[str, Any]:
        """`POST /restore`: the move in `restoring` (every notebook of it, once; this
        browser's notebook's answer) — or, once per pod, the checkpoint of a move that
        was rolled back or failed after the old pod was replaced (the sidecar's
        migration has ended then; the pending cell is not run: it asked for a GPU this
        pod does not have)."""
        migration = await self.current()
        if migration is None:
            raise ApiError(409, "nothing_to_restore",
                           "no migration is waiting for its state to be restored")
        done = self.done.get(str(migration.get("id")))
        if done is None and migration.get("phase") == "restoring":
            done = await self.restore_move(migration, by="browser")
            migration = done.answer.get("migration") or migration  # as the report ended it
        if done is not None:
            return await self._collect(done, kernel_id, path, migration)
        with self._claim(str(migration.get("id")), migration):
            if recoverable(migration):
                return await self._recover(kernel_id, path, migration)
        raise ApiError(409, "nothing_to_restore",
                       "no migration is waiting for its state to be restored (the current "
                       f"one is {migration.get('phase')})", migration=migration)

    async def restore_move(self, migration: dict[str, Any], *, by: str) -> ServerRestore:
        """Restore every notebook of the move in `restoring` into its notebook's kernel
        (a browser's session, or one opened here), all at once, and report to
        the sidecar, which ends the move. While it runs, another call waits for it and
        gets its answer; if it fails, the waiting call tries once more itself (the
        kernels never get the state twice: what was restored is kept in `done`)."""
        migration_id = str(migration["id"])
        while (running := self._moves_in_flight.get(migration_id)) is not None:
            # Shielded: a waiter that goes away (its browser closed) leaves the restore.
            if (answer := await asyncio.shield(running)) is not None:
                return answer
        running = asyncio.get_running_loop().create_future()
        self._moves_in_flight[migration_id] = running
        reported: ServerRestore | None = None
        try:
            with self._claim(migration_id, migration):
                done = self.done.get(migration_id)
                if done is None:
                    done = await self._restore_every_notebook(migration, by)
                    self.done[migration_id] = done
                if not done.reported:
                    # Restored but not yet told (the sidecar did not answer): tell it
                    # again, never restore again — the kernels hold the state already.
                    done.answer["migration"] = await self.sidecar.post(
                        "/migrations/current/restore", done.report)
                    done.reported = True
                reported = done
            return done
        finally:
            del self._moves_in_flight[migration_id]
            running.set_result(reported)

    async def _restore_every_notebook(self, migration: dict[str, Any],
                                      by: str) -> ServerRestore:
        started = time.monotonic()

        async def one(ref: dict[str, Any]) -> tuple[Path, tuple[str, dict[str, Any]]]:
            notebook = Path(ref["notebook_path"])
            try:
                # A new pod has no kernels: this starts the notebook's (its session's).
                kernel_id = await notebook_kernel(self.kernels, notebook)
            except ApiError as exc:  # no kernel for it: that notebook's restore failed
                return notebook, ("", {
                    "ok": False, "restored": [], "not_restored": [],
                    "commit_id": ref["commit_id"],
                    "detail": f"no kernel to restore into (the checkpoint is kept on the "
                              f"volume): {exc.detail}"})
            kernel_s = time.monotonic() - started
            answer = await self._restore_into(kernel_id, notebook, ref["commit_id"])
            answer.setdefault("seconds", {})["kernel"] = round(kernel_s, 3)
            return notebook, (kernel_id, {**answer, "commit_id": ref["commit_id"]})

        # Each notebook into its own kernel (its own process): all at once.
        results = dict(await asyncio.gather(*(one(ref) for ref in checkpoints_of(migration))))
        report = (overall_report({self.kernels.relative(nb): r
                                  for nb, (_, r) in results.items()}) if results
                  else {"ok": True, "restored": [], "not_restored": [],
                        "detail": "the move was made without a checkpoint"})
        elapsed_ms = (time.monotonic() - started) * 1000
        for _, answer in results.values():
            answer["elapsed_ms"] = elapsed_ms
        cell = migration.get("pending_cell")
        held = None
        if isinstance(cell, dict):
            owner = results.get(Path(cell["notebook_path"]))
            if owner is not None and owner[1]["ok"]:
                held = {"cell_id": cell["cell_id"], "code": cell["code"],
                        "path": self.kernels.relative(Path(cell["notebook_path"]))}
        log.info("restored", extra={"migration": migration["id"], "ok": report["ok"],
                                    "notebooks": len(results), "by": by,
                                    "elapsed_s": round(elapsed_ms / 1000, 3)})
        return ServerRestore(str(migration["id"]), results, report,
                             {**report, "commit_id": None, "elapsed_ms": elapsed_ms},
                             held, time.time(), by=by)

    @contextlib.contextmanager
    def _claim(self, key: str, migration: dict[str, Any] | None) -> Iterator[None]:
        """Run one restore of `key` at a time on this server (the event loop makes the
        check-and-add atomic); another request meanwhile gets 409."""
        if key in self._restoring:
            raise ApiError(409, "already_restoring",
                           "the state is being restored now (from another tab?); its "
                           "kernel will have the variables when it is done",
                           migration=migration)
        self._restoring.add(key)
        try:
            yield
        finally:
            self._restoring.discard(key)

    async def _collect(self, done: ServerRestore, kernel_id: str, path: str | None,
                       migration: dict[str, Any]) -> dict[str, Any]:
        """A browser asks for a move restored here: what the restore did in its
        notebook, into which kernel, and when; the held cell to the first browser of
        the cell's notebook only."""
        if not done.notebooks:  # the move had no checkpoint
            done.seen = True
            return {**done.answer, "pending_cell": None, "migration": migration,
                    "restored_on_server": done.by == "server", "kernel_id": None,
                    "restored_at": done.at}
        notebook = await self.kernels.notebook_path(kernel_id, path)
        if notebook not in done.notebooks:
            names = ", ".join(self.kernels.relative(nb) for nb in done.notebooks)
            raise ApiError(409, "other_notebook",
                           f"the move's state was restored into {names}; open that notebook",
                           migration=migration)
        into, answer = done.notebooks[notebook]
        cell = done.pending_cell
        if cell is not None and cell["path"] == self.kernels.relative(notebook):
            done.pending_cell = None
        else:
            cell = None
        done.seen = True
        return {**answer, "pending_cell": cell, "migration": migration,
                "restored_on_server": done.by == "server", "kernel_id": into,
                "restored_at": done.at}

    async def _recover(self, kernel_id: str, path: str | None,
                       migration: dict[str, Any]) -> dict[str, Any]:
        if migration["id"] in self.recovered:
            raise ApiError(409, "already_restored",
                           f"the state of migration {migration['id']} was restored on this "
                           "pod already", migration=migration)
        notebook = await self.kernels.notebook_path(kernel_id, path)
        saved = migration["checkpoint"]
        owner = Path(saved["notebook_path"])
        if owner != notebook:
            raise ApiError(409, "other_notebook",
                           f"the checkpoint belongs to {self.kernels.relative(owner)}; open "
                           "that notebook to restore it", migration=migration)
        started = time.monotonic()
        report = await self._restore_into(kernel_id, notebook, saved["commit_id"])
        if report["ok"]:
            self.recovered.add(migration["id"])
        log.info("recovered after %s", migration["phase"], extra={
            "notebook": str(notebook), "ok": report["ok"], "migration": migration["id"]})
        return {**report, "commit_id": saved["commit_id"],
                "elapsed_ms": (time.monotonic() - started) * 1000, "pending_cell": None,
                "migration": migration, "recovered": True}

    async def restore_latest(self, kernel_id: str, path: str | None) -> dict[str, Any]:
        """Without a sidecar (the pod was not injected: say the webhook was down when
        it was created), the newest checkpoint of the notebook on the volume, once per
        notebook and pod — what is left to recover a move that was cut short."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        if str(notebook) in self.recovered:
            raise ApiError(409, "already_restored",
                           f"the newest checkpoint of {self.kernels.relative(notebook)} was "
                           "restored on this pod already")
        started = time.monotonic()
        with self._claim(str(notebook), None):
            report = await self._restore_into(kernel_id, notebook, None)
        if report["ok"]:
            self.recovered.add(str(notebook))
        return {**report, "commit_id": None,
                "elapsed_ms": (time.monotonic() - started) * 1000, "pending_cell": None,
                "migration": None, "recovered": True}

    async def _restore_into(self, kernel_id: str, notebook: Path,
                            commit_id: str | None) -> dict[str, Any]:
        facts = self.kernels.facts(kernel_id)
        started = time.monotonic()
        try:
            async with self.kernels.kernel(kernel_id) as kernel, \
                    self.storage.writing(notebook):
                ready = time.monotonic()
                outcome = await restore(kernel, notebook, commit_id,
                                        workspace=self.storage.workspace())
            facts.notebook = notebook  # restore attaches kishu to the notebook
        except KernelStateError as exc:
            return {"ok": False, "restored": [], "not_restored": [],
                    "detail": f"the state was not restored (the checkpoint is kept on "
                              f"the volume): {exc}"}
        log.info("restore", extra={"notebook": str(notebook), "ok": outcome.ok})
        return {"ok": outcome.ok, "restored": list(outcome.restored),
                "not_restored": [{"name": n, "reason": r} for n, r in outcome.not_restored],
                "detail": outcome.detail,
                # Where a restore's time went: the kernel's client ready and the database's
                # lock taken, then the kernel's own parts (`RestoreOutcome.seconds`).
                "seconds": {"ready": round(ready - started, 3), **outcome.seconds}}
