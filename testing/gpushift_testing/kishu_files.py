"""kishu-like checkpoint files for tests and benchmarks that need a checkpoint on the
workspace but no kernel (the real-kernel test is tests/server/test_checkpoints_kishu.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def kishu_db(notebook_path: Path, *commits: str) -> Path:
    """A kishu 0.3.4 database beside the notebook, laid out as kishu writes it (the tables
    gpushift_sidecar.checkpoint_database reads), with `commits`, the last one HEAD."""
    notebook_path.parent.mkdir(parents=True, exist_ok=True)
    if not notebook_path.exists():
        notebook_path.write_text("{}")
    db = notebook_path.with_name(notebook_path.stem + ".kishudb")
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
