"""Why gpushift's kishu databases use 64 KiB pages: one large variable written into a
database and read back, at SQLite's default 4 KiB pages (the baseline, in the same
run) and at 64 KiB, each way as the checkpoint and the restore do it (chunks of at most
256 MiB into zero-filled blobs, one commit; a read-only `select ... order by` of the
chunks). Medians of interleaved runs, each starting at another size; ratios over 4 KiB.

    .venv/bin/python bench/sqlite_pages.py [--mib 500] [--runs 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

CHUNK = 256 * 2**20  # kishu 0.3.4's largest blob


def write_then_read(folder: Path, data: bytes, page_size: int) -> tuple[float, float]:
    db = folder / f"pages-{page_size}.db"
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA page_size = {page_size}")
    con.execute("PRAGMA auto_vacuum = INCREMENTAL")
    con.execute("CREATE TABLE snapshot (name text, commit_id text, chunk int, data blob, "
                "PRIMARY KEY (name, commit_id, chunk))")
    con.commit()
    started = time.perf_counter()
    view = memoryview(data)
    for chunk, start in enumerate(range(0, len(view), CHUNK)):
        piece = view[start:start + CHUNK]
        row = con.execute("INSERT INTO snapshot VALUES ('big', 'c', ?, zeroblob(?))",
                          (chunk, len(piece)))
        assert row.lastrowid is not None
        with con.blobopen("snapshot", "data", row.lastrowid) as blob:
            blob.write(piece)
    con.commit()
    con.close()
    written = time.perf_counter() - started
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    started = time.perf_counter()
    chunks = con.execute("SELECT data FROM snapshot WHERE name = 'big' "
                         "ORDER BY commit_id, chunk").fetchall()
    read = time.perf_counter() - started
    con.close()
    assert sum(len(c[0]) for c in chunks) == len(data)
    db.unlink()
    return written, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", default="4,16,64", help="page sizes in KiB; the first is "
                        "the baseline")
    parser.add_argument("--dir", help="where the databases go (default: a temporary folder "
                        "on the disk of the working directory)")
    args = parser.parse_args()
    data = os.urandom(args.mib * 2**20)
    folder = Path(tempfile.mkdtemp(prefix="gpushift-pages-", dir=args.dir or ".")).resolve()
    results: dict[int, list[tuple[float, float]]] = {
        int(kib) * 1024: [] for kib in args.pages.split(",")}
    try:
        sizes = list(results)
        for run in range(args.runs):
            # Each run starts at another size: the page cache's state after the previous
            # database's deletion weighs on whichever comes next.
            for page_size in sizes[run % len(sizes):] + sizes[:run % len(sizes)]:
                results[page_size].append(write_then_read(folder, data, page_size))
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
    medians = {size: (statistics.median(w for w, _ in runs), statistics.median(r for _, r in runs))
               for size, runs in results.items()}
    print(f"{args.mib} MiB in one variable, medians of {args.runs} interleaved runs")
    for size, (written, read) in medians.items():
        print(f"  page {size // 1024:2d} KiB: write+commit {written:6.2f} s   read {read:6.2f} s")
    base = next(iter(medians))
    base_written, base_read = medians[base]
    for size, (written, read) in list(medians.items())[1:]:
        print(f"  {size // 1024} KiB / {base // 1024} KiB: write {written / base_written:.2f}x, "
              f"read {read / base_read:.2f}x")


if __name__ == "__main__":
    main()
