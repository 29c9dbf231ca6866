"""runtime-config.json: what the notebook container reads about its pod (build: pure).

The file keeps the seed's keys (`usingGPU`, `PodName`, `PodNamespace`) so older front
ends still read it, and adds: `notebook`, `gpu`, `node`, `profile`, `profiles` (the
admin's GPU profile names), `idleBounds` (the admin's idle timeout and its bounds),
`checkpoints` (the admin's retention of checkpoints, `keep`, and the room a checkpoint
leaves on the notebook's volume, `min_free_mib`: the server extension applies them),
`migration`, `lastCheckpoint`, `sidecarVersion`, `updatedAt`, and on a GPU pod `idle` (the idle
timer, as `GET /idle` shows it, written when its state changes: not every second), and
`optimizerOff` (why the optimizer is off for this notebook's server type; absent when it
is on: the server extension then says "optimizer off" with that reason). The
native sidecar's startup probe passes only once it has been written, so the notebook
container never starts without it; it is rewritten whenever one of its fields changes.

`lastCheckpoint` is `{"notebookPath", "commitId", "verifiedAt"}`: the most recent
complete kishu commit the checkpoint watcher saw, or the checkpoint a migration names
(`{"notebookPath", "commitId"}`), whichever came last.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpushift_core.timestamps import iso_utc
from gpushift_sidecar import __version__
from gpushift_sidecar.env import SidecarEnv

if TYPE_CHECKING:
    from gpushift_sidecar.token import ApiToken

FILE_NAME = "runtime-config.json"

log = logging.getLogger("gpushift.sidecar")


def build_runtime_config(env: SidecarEnv, *, migration: dict[str, Any] | None,
                         last_checkpoint: dict[str, Any] | None,
                         updated_at: dt.datetime,
                         idle: dict[str, Any] | None = None,
                         optimizer_off: str | None = None) -> dict[str, Any]:
    """The document, from the webhook's facts and what changed since (pure). `idle`
    None: no idle timer runs (a CPU pod), and the key is left out; so is
    `optimizerOff` while `optimizer_off` is None."""
    profile = env.settings.matching_profile(env.gpu)
    bounds = env.settings.idle  # what the user's idle timeout may be (JupyterLab shows it)
    document = {
        "usingGPU": env.gpu is not None,
        "PodName": env.pod_name,
        "PodNamespace": env.pod_namespace,
        "notebook": env.notebook_name,
        "gpu": {"resource": env.gpu.resource, "count": env.gpu.count} if env.gpu else None,
        "node": env.node_name,
        "profile": profile.name if profile else None,
        "migration": migration,
        "lastCheckpoint": last_checkpoint,
        "profiles": [p.name for p in env.settings.profiles],
        "idleBounds": {"timeout_seconds": bounds.timeout_seconds,
                       "min_seconds": bounds.min_seconds, "max_seconds": bounds.max_seconds,
                       "warning_seconds": bounds.warning_seconds},
        # Where the checkpoints live: the server extension puts each notebook's
        # database in this volume's hidden .gpushift/checkpoints/, as the sidecar reads it.
        "workspace": None if env.workspace_dir is None else str(env.workspace_dir),
        "checkpoints": {"keep": env.settings.checkpoints.keep,
                        "min_free_mib": env.settings.checkpoints.min_free_mib,
                        "background_interval_seconds":
                            env.settings.checkpoints.background_interval_seconds,
                        "background_max_state_mib":
                            env.settings.checkpoints.background_max_state_mib},
        "sidecarVersion": __version__,
        "updatedAt": iso_utc(updated_at),
    }
    if idle is not None:
        document["idle"] = idle
    if optimizer_off is not None:
        document["optimizerOff"] = optimizer_off
    return document


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Readers see the old content or the new, never a part, even across a crash: write
    a temporary file beside it, fsync, rename over the old one, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the folder's entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class RuntimeFiles:
    """Keeps api-token and runtime-config.json written in the runtime dir.

    A failed write (volume missing, read-only, full) is logged once per distinct reason
    and retried by `run()`; the sidecar stays up and `/healthz` says why it is not
    ready, instead of crashing into a restart loop that tells nobody anything.
    """

    def __init__(self, env: SidecarEnv, token: ApiToken,
                 on_write: Callable[[bool], None] | None = None) -> None:
        self._env = env
        self._token = token
        self._on_write = on_write  # told whether each write worked, for metrics
        self._migration: dict[str, Any] | None = None
        self._last_checkpoint: dict[str, Any] | None = None
        self._idle: dict[str, Any] | None = None
        self._optimizer_off: str | None = None
        self._document = self._build()
        self._dirty = True
        self._token_written = False
        self._last_write_ok: bool | None = None
        self._changed = asyncio.Event()
        self.ready = False
        """True once runtime-config.json (and the token before it) has been written."""
        self.problem: str | None = "runtime-config.json has not been written yet"
        """Why the files are not (or no longer) current; None when they are."""

    def report_writes_to(self, on_write: Callable[[bool], None]) -> None:
        """Tell `on_write` whether each write worked from now on, and how the last one
        went if one was made before (the early write, before the metrics existed)."""
        self._on_write = on_write
        if self._last_write_ok is not None:
            on_write(self._last_write_ok)

    @property
    def path(self) -> Path:
        return self._env.runtime_dir / FILE_NAME

    def document(self) -> dict[str, Any]:
        return dict(self._document)

    @property
    def migration(self) -> dict[str, Any] | None:
        return self._migration

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        return self._last_checkpoint

    def update(self, *, migration: dict[str, Any] | None,
               last_checkpoint: dict[str, Any] | None) -> None:
        """Set the fields that change while the pod runs; rewrite if they did."""
        if (migration, last_checkpoint) != (self._migration, self._last_checkpoint):
            self._migration, self._last_checkpoint = migration, last_checkpoint
            self._changed_now()

    def update_last_checkpoint(self, last_checkpoint: dict[str, Any] | None) -> None:
        self.update(migration=self._migration, last_checkpoint=last_checkpoint)

    @property
    def idle(self) -> dict[str, Any] | None:
        return self._idle

    def update_idle(self, idle: dict[str, Any] | None) -> None:
        """The idle timer's state (the caller decides when it is worth a write)."""
        if idle != self._idle:
            self._idle = idle
            self._changed_now()

    def update_optimizer_off(self, reason: str | None) -> None:
        """Why the optimizer is off for this server type (None: it is on)."""
        if reason != self._optimizer_off:
            self._optimizer_off = reason
            self._changed_now()

    def _changed_now(self) -> None:
        self._document = self._build()
        self._dirty = True
        # Written before the caller answers, so a client that reads the file after an
        # API call sees the change; a failure is left to run()'s retries.
        self.write_now()
        self._changed.set()

    def write_now(self) -> bool:
        """Write what is not current yet; True when everything is."""
        if not self._dirty:
            return True
        try:
            self._env.runtime_dir.mkdir(parents=True, exist_ok=True)
            if not self._token_written:
                self._token.write(self._env.runtime_dir)
                self._token_written = True
            write_atomically(self.path, _encode(self._document))
        except OSError as exc:
            problem = (f"cannot write {exc.filename or self._env.runtime_dir}: "
                       f"{exc.strerror or exc}")
            if problem != self.problem:
                log.error("runtime files not written; retrying",
                          extra={"runtime_dir": str(self._env.runtime_dir),
                                 "why": problem})
            self.problem = problem
            self._report(ok=False)
            return False
        if not self.ready or self.problem is not None:
            log.info("runtime-config.json written", extra={"path": str(self.path)})
        self._dirty = False
        self.ready = True
        self.problem = None
        self._report(ok=True)
        return True

    async def run(self, retry_first: float = 0.5, retry_max: float = 5.0) -> None:
        """Write now, then again after each change; retry failures with backoff."""
        delay = retry_first
        while True:
            if self.write_now():
                delay = retry_first
                self._changed.clear()
                await self._changed.wait()
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry_max)

    def _build(self) -> dict[str, Any]:
        return build_runtime_config(self._env, migration=self._migration,
                                    last_checkpoint=self._last_checkpoint,
                                    updated_at=dt.datetime.now(dt.UTC), idle=self._idle,
                                    optimizer_off=self._optimizer_off)

    def _report(self, *, ok: bool) -> None:
        self._last_write_ok = ok
        if self._on_write is not None:
            self._on_write(ok)


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
