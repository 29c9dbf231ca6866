"""Loading one kishu commit's variables, one group at a time, with nothing re-run.

Runs INSIDE the kernel (sent as the module `_gpushift_kishu_snapshots`, see `driver`),
and is plain Python with no kishu import, so it is also tested directly.

kishu 0.3.4 stores a commit's variables as "variable snapshots": groups of variables
that share objects (found by kishu's IdGraph), each group one dill pickle of a
`{name: value}` dict in the `variable_snapshot` table (blob chunks, key
`versioned_name` = "<version>,<name>,<name>..."). `ahg_active_vses` lists the groups
that make up the state at a commit; a group is stored once, at the commit where it
last changed. A group that could not be pickled is not stored at all.

The database is opened read-only (`mode=ro`): loading never writes to it.

`SafeUnpickler` differs from `dill.loads` in two places:
- torch storages pickled on a GPU (`torch.storage._load_from_bytes`, which calls
  `torch.load` without `map_location`) are loaded onto the CPU when this kernel has no
  usable GPU, instead of failing;
- an open file is never reopened: dill reopens a pickled file handle with its saved mode
  (`open(name, "w")` truncates the user's file). Such a group is reported instead.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dill  # type: ignore[import-untyped,unused-ignore]

# Written by `agent._record_not_saved`: why a variable of a commit was not saved.
NOT_SAVED_TABLE = "gpushift_not_saved"


class NotRebuiltError(Exception):
    """A value that is deliberately not rebuilt in a restore (its reason is the text)."""


@dataclass
class LoadReport:
    values: dict[str, Any] = field(default_factory=dict)
    not_restored: list[tuple[str, str]] = field(default_factory=list)
    moved_to_cpu: list[str] = field(default_factory=list)
    failed_loads: int = 0
    """Groups that were saved but failed to load (not the deliberately skipped ones)."""
    read_s: float = 0.0
    """Seconds spent reading the groups' chunks from the database."""
    unpickle_s: float = 0.0
    """Seconds spent unpickling them."""


def _refuse_file_handle(name: str, mode: str, *_: Any) -> Any:
    raise NotRebuiltError(
        f"open file {name!r} (mode {mode!r}) is not reopened: reopening could truncate "
        "or change the file; open it again in a cell")


class ChunkReader:
    """A group's chunks read in order as one file, for the unpickler, without joining
    them: the unpickler reads a large value straight into its own buffer (`readinto`),
    small ones with `read` and `readline`.

    A chunk is bytes or an open `sqlite3.Blob`. A blob is read a piece at a time
    (`PIECE`), so the only memory a restore touches for a large value is the value's
    own: fetching a 500 MiB row first copied it twice (SQLite's buffer, then the
    `bytes`), and on a fresh pod every new page costs a fault (in this VM 2-10 s per
    GiB, measured in bench/e2e_migration.py: read 6.0 s p50 at 500 MiB before)."""

    PIECE = 1 << 20
    """At most this much of a blob is read at once: one buffer, reused by the allocator."""

    def __init__(self, chunks: Sequence[bytes | sqlite3.Blob]) -> None:
        self._chunks: list[memoryview | sqlite3.Blob] = [
            chunk if isinstance(chunk, sqlite3.Blob) else memoryview(chunk)
            for chunk in chunks if len(chunk)]
        self._chunks.reverse()  # pop() from the end: the next chunk
        self._at = 0  # position in the current chunk
        self.read_s = 0.0
        """Seconds spent copying from the chunks (reading the blobs), for `LoadReport`."""

    def readinto(self, target: Any) -> int:
        started = time.monotonic()
        out = memoryview(target).cast("B")
        done = 0
        while done < len(out) and self._chunks:
            chunk = self._chunks[-1]
            n = min(len(chunk) - self._at, len(out) - done, self.PIECE)
            out[done:done + n] = _piece(chunk, self._at, n)
            done += n
            self._advance(chunk, n)
        self.read_s += time.monotonic() - started
        return done

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = sum(len(chunk) for chunk in self._chunks) - self._at
        buffer = bytearray(size)
        return bytes(buffer[:self.readinto(buffer)])

    def readline(self) -> bytes:
        line = bytearray()
        while self._chunks and not line.endswith(b"\n"):
            chunk = self._chunks[-1]
            piece = bytes(_piece(chunk, self._at, 4096))
            end = piece.find(b"\n")
            n = len(piece) if end < 0 else end + 1
            line += piece[:n]
            self._advance(chunk, n)
        return bytes(line)

    def _advance(self, chunk: memoryview | sqlite3.Blob, n: int) -> None:
        self._at += n
        if self._at == len(chunk):
            self._chunks.pop()
            self._at = 0


def _piece(chunk: memoryview | sqlite3.Blob, at: int, n: int) -> memoryview | bytes:
    """Up to `n` bytes of `chunk` from `at`: a view of bytes, a copy of a blob's."""
    if isinstance(chunk, memoryview):
        return chunk[at:at + n]
    chunk.seek(at)
    return chunk.read(n)


class SafeUnpickler(dill.Unpickler):  # type: ignore[misc]
    """dill's unpickler with GPU storages mapped to the CPU and open files refused."""

    def __init__(self, data: bytes | Sequence[bytes | sqlite3.Blob]) -> None:
        self.reader = ChunkReader([data] if isinstance(data, bytes) else data)
        super().__init__(self.reader)
        self.moved_to_cpu = False

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._load_torch_storage
        if module in ("dill._dill", "dill.dill") and name == "_create_filehandle":
            return _refuse_file_handle
        return super().find_class(module, name)

    def _load_torch_storage(self, data: bytes) -> Any:
        import torch  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

        if torch.cuda.is_available():
            try:
                return torch.load(io.BytesIO(data), weights_only=False)
            except RuntimeError:
                pass  # e.g. saved on cuda:3 of a bigger node: fall back to the CPU
        locations: list[str] = []

        def on_cpu(storage: Any, location: str) -> Any:
            # torch calls this with the storage already read onto the CPU.
            locations.append(str(location))
            return storage

        storage = torch.load(io.BytesIO(data), map_location=on_cpu, weights_only=False)
        if any(not loc.startswith("cpu") for loc in locations):
            self.moved_to_cpu = True
        return storage


def loads(data: bytes | Sequence[bytes | sqlite3.Blob]) -> tuple[Any, bool]:
    """Unpickle one group (its bytes, or its chunks in order); the value and whether GPU
    storages were moved to the CPU."""
    unpickler = SafeUnpickler(data)
    value = unpickler.load()
    return value, unpickler.moved_to_cpu


def connect_read_only(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True)


def group_names(versioned_name: str) -> list[str]:
    """kishu's `VariableSnapshot.versioned_name`: "<version>,<name>,<name>..."."""
    return sorted(versioned_name.split(",")[1:])


def _not_saved_reasons(con: sqlite3.Connection, commit_id: str) -> dict[str, str]:
    try:
        rows = con.execute("select name, reason from gpushift_not_saved where commit_id = ?",
                           (commit_id,)).fetchall()
    except sqlite3.OperationalError:  # no such table: a checkpoint made without gpushift
        return {}
    return {str(name): str(reason) for name, reason in rows}


def load_commit(db_path: Path, commit_id: str,
                on_group: Callable[[list[str]], None] | None = None) -> LoadReport:
    """Every variable of `commit_id`, each group loaded on its own: a group that fails
    is reported by name and the others still load."""
    report = LoadReport()
    con = connect_read_only(db_path)
    try:
        if con.execute("select 1 from commit_entry where commit_id = ?",
                       (commit_id,)).fetchone() is None:
            raise LookupError(f"commit {commit_id} is not in {db_path}")
        groups = [str(r[0]) for r in con.execute(
            "select versioned_name from ahg_active_vses where commit_id = ? "
            "order by versioned_name", (commit_id,))]
        reasons = _not_saved_reasons(con, commit_id)
        for versioned_name in groups:
            names = group_names(versioned_name)
            if on_group is not None:
                on_group(names)
            # The order of kishu's primary key (versioned_name, commit_id, chunk_id): ordering
            # by chunk_id alone made SQLite copy every blob into a temporary B-tree to sort
            # it (2.5x the read time of a 500 MiB state).
            rows = [int(r[0]) for r in con.execute(
                "select rowid from variable_snapshot where versioned_name = ? "
                "order by commit_id, chunk_id", (versioned_name,))]
            if not rows:
                for name in names:
                    report.not_restored.append((name, reasons.get(
                        name, "not saved: it could not be pickled when the checkpoint was made")))
                continue
            with ExitStack() as blobs:
                chunks = [blobs.enter_context(con.blobopen("variable_snapshot", "data", row,
                                                           readonly=True)) for row in rows]
                _load_group(report, names, chunks)
    finally:
        con.close()
    return report


def _load_group(report: LoadReport, names: list[str], chunks: list[sqlite3.Blob]) -> None:
    started = time.monotonic()
    unpickler = SafeUnpickler(chunks)
    try:
        value = unpickler.load()
        if not isinstance(value, dict):
            raise TypeError(f"a snapshot holds a {type(value).__name__}, not a dict")
    except NotRebuiltError as exc:
        for name in names:
            others = ", ".join(n for n in names if n != name)
            report.not_restored.append(
                (name, f"{exc} (saved together with {others})" if others else str(exc)))
        return
    except Exception as exc:  # any failure of one group must not stop the others
        report.failed_loads += 1
        for name in names:
            report.not_restored.append(
                (name, f"could not be loaded: {type(exc).__name__}: {exc}"[:500]))
        return
    finally:
        report.read_s += unpickler.reader.read_s
        report.unpickle_s += time.monotonic() - started - unpickler.reader.read_s
    report.values.update(value)
    if unpickler.moved_to_cpu:
        report.moved_to_cpu.extend(sorted(value))
