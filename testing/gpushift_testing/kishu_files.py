"""kishu-like checkpoint files for tests and benchmarks that need a checkpoint on the
workspace but no kernel (the real-kernel test is tests/server/test_checkpoints_kishu.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gpushift_sidecar.checkpoint_database import database_path


def kishu_db(notebook_path: Path, *commits: str, workspace: Path) -> Path:
    """A kishu 0.3.4 database of the notebook, where gpushift keeps it (the workspace's
    hidden folder), laid out as kishu writes it (the tables
    gpushift_sidecar.checkpoint_database reads), with `commits`, the last one HEAD."""
    notebook_path.parent.mkdir(parents=True, exist_ok=True)
    if not notebook_path.exists():
        notebook_path.write_text("{}")
    db = database_path(notebook_path, workspace)
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS commit_entry (commit_id text primary key, "
                    "data blob)")
        con.execute("CREATE TABLE IF NOT EXISTS head_branch (head primary key, branch_name "
                    "text, commit_id text)")
        for commit in commits:
            con.execute("INSERT INTO commit_entry VALUES (?, ?)", (commit, b"dill bytes"))
            con.execute("INSERT OR REPLACE INTO head_branch VALUES ('HEAD', 'main', ?)",
                        (commit,))
        con.commit()
    finally:
        con.close()
    return db
