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
from collections.abc import Callable
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
    """A group's blob chunks read in order as one file, for the unpickler. Joining them
    first copied the whole group once more (0.3 s for a 500 MiB array, kept in two
    chunks by kishu); the unpickler reads a large value straight into its own buffer
    (`readinto`), small ones with `read` and `readline`."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._views = [memoryview(chunk) for chunk in chunks if len(chunk)]
        self._views.reverse()  # pop() from the end: the next chunk

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        done = 0
        while done < len(out) and self._views:
            view = self._views[-1]
            n = min(len(view), len(out) - done)
            out[done:done + n] = view[:n]
            done += n
            self._advance(view, n)
        return done

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = sum(len(view) for view in self._views)
        buffer = bytearray(size)
        return bytes(buffer[:self.readinto(buffer)])

    def readline(self) -> bytes:
        line = bytearray()
        while self._views and not line.endswith(b"\n"):
            view = self._views[-1]
            piece = bytes(view[:4096])
            end = piece.find(b"\n")
            n = len(piece) if end < 0 else end + 1
            line += piece[:n]
            self._advance(view, n)
        return bytes(line)

    def _advance(self, view: memoryview, n: int) -> None:
        if n == len(view):
            self._views.pop()
        else:
            self._views[-1] = view[n:]


class SafeUnpickler(dill.Unpickler):  # type: ignore[misc]
    """dill's unpickler with GPU storages mapped to the CPU and open files refused."""

    def __init__(self, data: bytes | list[bytes]) -> None:
        super().__init__(ChunkReader(data if isinstance(data, list) else [data]))
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


def loads(data: bytes | list[bytes]) -> tuple[Any, bool]:
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
            started = time.monotonic()
            chunks = con.execute("select data from variable_snapshot where versioned_name = ? "
                                 "order by commit_id, chunk_id", (versioned_name,)).fetchall()
            report.read_s += time.monotonic() - started
            if not chunks:
                for name in names:
                    report.not_restored.append((name, reasons.get(
                        name, "not saved: it could not be pickled when the checkpoint was made")))
                continue
            started = time.monotonic()
            _load_group(report, names, [bytes(c[0]) for c in chunks])
            report.unpickle_s += time.monotonic() - started
    finally:
        con.close()
    return report


def _load_group(report: LoadReport, names: list[str], data: list[bytes]) -> None:
    try:
        value, moved = loads(data)
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
    report.values.update(value)
    if moved:
        report.moved_to_cpu.extend(sorted(value))
