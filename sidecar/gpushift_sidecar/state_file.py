"""The migration's file on the workspace volume: one JSON document, written atomically.

The volume moves with the notebook, so the sidecar of the pod that replaces this one reads
the file and carries the migration on. A file that cannot be read is set aside, never
deleted: it may be the only copy of something.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.runtime_config import write_atomically
from gpushift_sidecar.state import SCHEMA, CorruptState, Migration

__all__ = ["MigrationStore"]

log = logging.getLogger("gpushift.sidecar")


class MigrationStore:
    """The migration's file, written atomically; a file that cannot be read is kept."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_env(cls, env: SidecarEnv) -> MigrationStore:
        name = f"migration-{env.notebook_name}.json"
        if env.workspace_dir is not None:
            return cls(env.workspace_dir / ".gpushift" / name)
        log.warning("no workspace volume: the migration state is kept in the runtime dir "
                    "and will not survive a move to another pod",
                    extra={"notebook": env.notebook_name})
        return cls(env.runtime_dir / name)

    def load(self) -> Migration | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._set_aside(f"unreadable: {exc.strerror}")
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.pop("schema", None) != SCHEMA:
                raise CorruptState(f"not a gpushift migration of schema {SCHEMA}")
            return Migration.from_dict(data)
        except (ValueError, CorruptState) as exc:  # JSONDecodeError is a ValueError
            self._set_aside(f"corrupt: {exc}")
            return None

    def save(self, migration: Migration) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"schema": SCHEMA, **migration.to_dict()}
        # 0600: the pending cell is the user's code.
        write_atomically(self.path, json.dumps(document, indent=2).encode() + b"\n", 0o600)

    def _set_aside(self, why: str) -> None:
        """Keep the file for a human to look at (it may be the only copy of something),
        under a name the sidecar never reads, and start without a migration."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        kept = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            self.path.rename(kept)
        except OSError as exc:
            log.error("migration state file cannot be read nor set aside; starting "
                      "without a migration", extra={"path": str(self.path), "why": why,
                                                    "rename_error": exc.strerror})
            return
        log.error("migration state file set aside; starting without a migration",
                  extra={"path": str(self.path), "kept_as": str(kept), "why": why})
