"""Giving a kishu database's free pages back to the volume, in short steps.

A prune (`retention`) puts the pages it frees on SQLite's free list: later checkpoints
reuse them, so the file stops growing, but the volume gets nothing back. Here the file
shrinks:
- a database in `auto_vacuum = INCREMENTAL` mode (every database gpushift creates,
  `retention.prepare_database`) with `PRAGMA incremental_vacuum(N)`: each step moves
  at most N pages from the end of the file into free slots and truncates it, in its own
  short transaction, so a checkpoint or a restore waits at most one step;
- a database created before (kishu's default, `auto_vacuum = NONE`) with one VACUUM,
  which also switches it to incremental mode, and only when that is cheap: the file is
  small enough to rewrite within the time budget, and the volume has room for the copy
  a VACUUM writes. Otherwise its free pages are left for later checkpoints to reuse.

Every step gives up at once (`sqlite3.OperationalError`, "database is locked") when
another connection holds the database: the caller tries again after the next checkpoint.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gpushift_jupyter.kernel_state.retention import BUSY_TIMEOUT_S, PAGE_SIZE, open_existing

STEP_BYTES = 8 * 1024 * 1024
"""What one incremental step gives back at most (2,048 pages of 4 KiB, 512 of 16 KiB)."""
VACUUM_MAX_BYTES = 128 * 1024 * 1024
"""Largest database converted with a full VACUUM (about a second of rewriting)."""
INCREMENTAL = 2


@dataclass(frozen=True)
class ReclaimResult:
    bytes_before: int
    bytes_after: int
    free_pages_left: int
    """Free pages still in the file (the budget ran out, or the mode is NONE)."""
    vacuumed: bool
    """A full VACUUM converted the database to incremental mode."""
    stopped: str
    """Why it stopped: "done", "budget", "busy", "not incremental" (a legacy database
    left as it is) or "missing"."""
    steps: int = 0
    """Incremental steps taken (each one transaction of at most `STEP_BYTES`)."""


def reclaim(db_path: Path, *, budget_s: float, free_bytes: int | None = None,
            busy_timeout: float = BUSY_TIMEOUT_S, step_bytes: int = STEP_BYTES,
            vacuum_max_bytes: int = VACUUM_MAX_BYTES) -> ReclaimResult:
    """Shrink the database by its free pages, for at most about `budget_s` seconds (each
    step is one transaction). `free_bytes`: what the volume has free (None: unknown,
    then a legacy database is not converted)."""
    try:
        before = os.stat(db_path).st_size
    except FileNotFoundError:
        return ReclaimResult(0, 0, 0, False, "missing")
    started = time.monotonic()
    con = open_existing(db_path, timeout=busy_timeout, isolation_level=None)
    vacuumed = False
    try:
        mode = int(con.execute("PRAGMA auto_vacuum").fetchone()[0])
        free = int(con.execute("PRAGMA freelist_count").fetchone()[0])
        if mode != INCREMENTAL and free > 0:
            if not _may_vacuum(before, free_bytes, vacuum_max_bytes):
                return ReclaimResult(before, before, free, False, "not incremental")
            con.execute("PRAGMA auto_vacuum = INCREMENTAL")
            con.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            con.execute("VACUUM")  # rewrites the file: incremental mode, large pages
            vacuumed = True
            free = int(con.execute("PRAGMA freelist_count").fetchone()[0])
        step_pages = max(1, step_bytes // int(con.execute("PRAGMA page_size").fetchone()[0]))
        stopped = "done"
        steps = 0
        while free > 0:
            if time.monotonic() - started >= budget_s:
                stopped = "budget"
                break
            try:
                # Run to completion: `execute` steps the statement once, which frees ONE
                # page (Python's sqlite3 resets a statement that returns no columns after
                # its first step); a script runs it until done, all `step_pages` pages.
                con.executescript(f"PRAGMA incremental_vacuum({int(step_pages)});")
                steps += 1
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                stopped = "busy"
                break
            left = int(con.execute("PRAGMA freelist_count").fetchone()[0])
            if left >= free:  # nothing moved (cannot happen in incremental mode)
                break
            free = left
    finally:
        con.close()
    return ReclaimResult(before, os.stat(db_path).st_size, free, vacuumed, stopped, steps)


def _may_vacuum(size: int, free_bytes: int | None, vacuum_max_bytes: int) -> bool:
    """A full VACUUM writes a copy of the database (and a journal as large): only for a
    small database, on a volume with room for both."""
    return free_bytes is not None and size <= vacuum_max_bytes and free_bytes > 3 * size
