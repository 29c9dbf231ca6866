"""The SQLite layout of the kishu databases gpushift creates and converts: large pages
(a big variable is a chain of fewer overflow pages) and incremental auto-vacuum, and
space given back in steps of a fixed number of bytes whatever the page size. Real SQLite
files; no kernel needed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gpushift_jupyter.kernel_state.reclaim import reclaim
from gpushift_jupyter.kernel_state.retention import PAGE_SIZE, prepare_database

MIB = 1024 * 1024
INCREMENTAL = 2


def pragma(db: Path, name: str) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        con.close()


def fill_then_free(db: Path, mib: int) -> bytes:
    """`mib` MiB of blobs written then deleted (free pages at the end of the file, as a
    prune leaves them); returns the small row that stays."""
    kept = bytes(range(256)) * 40
    con = sqlite3.connect(db)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS snap (name text, data blob)")
        con.execute("INSERT INTO snap VALUES ('kept', ?)", (kept,))
        for i in range(mib):
            con.execute("INSERT INTO snap VALUES (?, randomblob(?))", (f"big{i}", MIB))
        con.commit()
        con.execute("DELETE FROM snap WHERE name != 'kept'")
        con.commit()
    finally:
        con.close()
    return kept


def kept_row(db: Path) -> bytes:
    con = sqlite3.connect(db)
    try:
        return bytes(con.execute("SELECT data FROM snap WHERE name = 'kept'").fetchone()[0])
    finally:
        con.close()


def test_a_new_database_has_large_pages_and_incremental_vacuum(tmp_path: Path) -> None:
    db = tmp_path / "nb.ipynb.kishudb"
    assert prepare_database(db)
    assert pragma(db, "page_size") == PAGE_SIZE == 16384
    assert pragma(db, "auto_vacuum") == INCREMENTAL
    assert not prepare_database(db)  # an existing one is left as it is


def test_space_comes_back_in_steps_of_bytes_not_pages(tmp_path: Path) -> None:
    """20 MiB freed in a 16 KiB-page database: steps of 8 MiB are 512 pages each (3
    steps; counted in pages of 4 KiB, 2,048 pages would be 32 MiB: one step, longer
    than a checkpoint should wait); a step smaller than a page still moves one page."""
    db = tmp_path / "nb.ipynb.kishudb"
    prepare_database(db)
    kept = fill_then_free(db, 20)
    free = pragma(db, "freelist_count")
    assert 20 * MIB <= free * PAGE_SIZE < 21 * MIB
    assert reclaim(db, budget_s=0.0).stopped == "budget"  # no time: no step
    result = reclaim(db, budget_s=30.0, step_bytes=8 * MIB)
    assert result.stopped == "done" and result.free_pages_left == 0
    assert result.steps == -(-free // (8 * MIB // PAGE_SIZE)) == 3
    assert result.bytes_after <= result.bytes_before - 20 * MIB
    assert result.bytes_after == db.stat().st_size
    assert kept_row(db) == kept

    tiny = tmp_path / "tiny.kishudb"
    prepare_database(tiny)
    fill_then_free(tiny, 1)
    free = pragma(tiny, "freelist_count")
    result = reclaim(tiny, budget_s=30.0, step_bytes=1)
    assert result.stopped == "done" and result.free_pages_left == 0
    assert result.steps == free


def test_an_older_small_database_is_converted_to_large_pages(tmp_path: Path) -> None:
    """A database kishu created itself (4 KiB pages, no auto-vacuum) is rewritten once
    when it is small and the volume has room: large pages and incremental mode after,
    its rows intact."""
    db = tmp_path / "legacy.kishudb"
    kept = fill_then_free(db, 4)
    assert pragma(db, "page_size") == 4096 and pragma(db, "auto_vacuum") == 0
    result = reclaim(db, budget_s=30.0, free_bytes=10 * 1024 * MIB)
    assert result.vacuumed and result.stopped == "done"
    assert pragma(db, "page_size") == PAGE_SIZE
    assert pragma(db, "auto_vacuum") == INCREMENTAL
    assert kept_row(db) == kept
    assert db.stat().st_size < 2 * MIB
