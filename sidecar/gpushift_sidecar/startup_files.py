"""The runtime files, written first thing when the sidecar starts.

The notebook container starts once `runtime-config.json` exists (the native sidecar's
startup probe). Everything the file says is known before the sidecar's server and
Kubernetes client are imported — the webhook's facts (env), this pod's API token and the
migration the state file holds — so it is written before those imports, which take most
of the sidecar's start (~0.6 s of CPU; seconds under its CPU limit). The notebook's
Jupyter server starts meanwhile; the sidecar's API serves long before that server's own
start is over, and the server extension asks again until it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.runtime_config import RuntimeFiles
from gpushift_sidecar.state import Migration
from gpushift_sidecar.state_file import MigrationStore
from gpushift_sidecar.token import ApiToken
from gpushift_sidecar.tracker import MigrationTracker


@dataclass
class StartupFiles:
    """What the early write made, for the sidecar to go on with (`Sidecar.create`)."""

    token: ApiToken
    """This pod's API token (a previous run's, when the runtime volume has one)."""
    files: RuntimeFiles
    """The runtime files, written once (see `files.ready`, `files.problem`)."""
    tracker: MigrationTracker
    """The migration of the state file, as the runner resumes it."""


def make_startup_files(env: SidecarEnv,
                       tracker: MigrationTracker | None = None) -> StartupFiles:
    """The token, the runtime files (showing the tracker's current migration) and the
    tracker (default: a new one on the state file of `env`); nothing written yet."""
    token = ApiToken.load_or_create(env.runtime_dir)
    files = RuntimeFiles(env, token)
    tracker = tracker or MigrationTracker(MigrationStore.for_env(env))
    if tracker.current is not None:
        files.update(migration=tracker.current.summary(),
                     last_checkpoint=checkpoint_json(tracker.current))
    return StartupFiles(token, files, tracker)


def write_startup_files(env: SidecarEnv) -> StartupFiles:
    """`make_startup_files`, and the files written now. A failed write is logged and
    left to `RuntimeFiles.run()` to retry."""
    startup = make_startup_files(env)
    startup.files.write_now()
    return startup


def checkpoint_json(migration: Migration) -> dict[str, Any] | None:
    c = migration.checkpoint
    return None if c is None else {"notebookPath": c.notebook_path, "commitId": c.commit_id}
