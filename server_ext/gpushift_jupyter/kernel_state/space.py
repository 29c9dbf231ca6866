"""Room on the notebook's volume for a checkpoint: the check made before one (pure,
apart from `volume_free_bytes` and `expected_checkpoint_bytes`), and the words for a
checkpoint the volume refused.

A checkpoint stores only the variable groups that changed since the previous one, and
how much changed is known only once kishu has pickled them. The estimate is therefore
what the previous checkpoint wrote (its variable groups and its commit row, which
holds kishu's copy of the notebook), with a margin; for the first checkpoint of a
notebook nothing is known and only the admin's minimum applies. A checkpoint is refused
when the volume would be left with less than the admin's minimum free
(`checkpoints.min_free_mib`): the user's files need room too (a notebook that cannot be
saved loses work). A checkpoint that fills the volume anyway fails in SQLite's own
transaction: the previous checkpoints stay intact (`storage` reports why).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

MIB = 1024 * 1024
MARGIN = 1.5
"""The estimate is the previous checkpoint's size times this."""
_DISK_FULL = ("database or disk is full", "no space left on device",
              "enospc", "errno 28")


def mib(n: int | float) -> str:
    return f"{n / MIB:.0f} MiB" if n >= 10 * MIB else f"{n / MIB:.1f} MiB"


def space_refusal(*, free_bytes: int, expected_bytes: int, min_free_bytes: int) -> str | None:
    """Why a checkpoint is refused for lack of room (pure), None when it may go: the
    volume must keep `min_free_bytes` free after the checkpoint's expected size."""
    need = int(expected_bytes * MARGIN) + min_free_bytes
    if free_bytes >= need:
        return None
    about = (f"a checkpoint needs about {mib(expected_bytes)} (the size of the previous "
             "one) and " if expected_bytes > 0 else "")
    return (f"the notebook's volume is nearly full: {mib(free_bytes)} free; {about}"
            f"gpushift leaves at least {mib(min_free_bytes)} free for your files. The "
            "checkpoint was not made (the previous checkpoints are kept). Free space on "
            "the volume (delete files you do not need) and try again.")


def disk_full(error_text: str) -> bool:
    """Whether an error (SQLite's, the kernel's) says the volume is full (pure)."""
    text = error_text.lower()
    return any(words in text for words in _DISK_FULL)


def full_volume_reason(free_bytes: int | None) -> str:
    """What the user reads when a checkpoint filled the volume (pure)."""
    now = "" if free_bytes is None else f" ({mib(free_bytes)} free now)"
    return ("the notebook's volume is full: the checkpoint could not be written and was "
            f"not made{now}. The previous checkpoints are intact and your notebook can "
            "still be saved. Free space on the volume (delete files you do not need) and "
            "try again.")


def volume_free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged user may still write on the volume of `folder`, or of its
    nearest existing parent (a notebook's first checkpoint makes its folder)."""
    for place in (folder, *folder.parents):
        try:
            st = os.statvfs(place)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


def expected_checkpoint_bytes(db_path: Path) -> int:
    """What the newest checkpoint in the database wrote: its variable groups and its
    commit row. 0 when there is no database or no commit (or it cannot be read now)."""
    if not db_path.exists():
        return 0
    try:
        con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return 0
    try:
        row = con.execute("SELECT commit_id, length(data) FROM commit_entry "
                          "ORDER BY rowid DESC LIMIT 1").fetchone()
        if row is None:
            return 0
        groups = con.execute("SELECT coalesce(sum(length(data)), 0) FROM variable_snapshot "
                             "WHERE commit_id = ?", (row[0],)).fetchone()[0]
        return int(groups) + int(row[1] or 0)
    except sqlite3.Error:
        return 0
    finally:
        con.close()
