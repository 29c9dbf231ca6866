"""How kishu 0.3.4's storage is driven in the kernel (sent to the kernel as the module
`_gpushift_kishu_storage`, before `_gpushift_kishu_patches`, which installs it).

- `one_transaction`: everything a checkpoint writes, kishu's and gpushift's, is one
  SQLite transaction, synced once, all or nothing.
- `store_variable_snapshots`: kishu's `KishuCheckpoint.store_variable_snapshots`, the
  same rows holding dill's pickles, made by Python's C pickler where it can make dill's
  bytes (`pickle_group`), without copying large arrays on the way.
"""

from __future__ import annotations

import contextlib
import copyreg
import enum
import importlib.machinery
import os
import pickle
import sqlite3
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import dill  # type: ignore[import-untyped,unused-ignore]
import numpy
from dill._dill import (  # type: ignore[import-untyped,unused-ignore]
    _create_array,
    _eval_repr,
    _load_type,
    _locate_function,
    _typemap,
)
from kishu.storage.checkpoint import VARIABLE_SNAPSHOT_TABLE, KishuCheckpoint

_KISHU_STORAGE = ("branch", "checkpoint", "commit", "commit_graph", "connection", "disk_ahg",
                  "tag", "variable_version")
"""kishu 0.3.4's modules (`kishu.storage.*`) that open their own SQLite connections."""


class _SharedConnection:
    """The one connection of a commit (`one_transaction`), as each of kishu's storage
    calls opens, commits and closes "its own": those two are no-ops here."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def commit(self) -> None:
        """Once, at the end of the whole commit: `one_transaction`."""

    def close(self) -> None:
        """By `one_transaction`."""

    def __getattr__(self, name: str) -> Any:  # cursor, execute, executemany, blobopen
        return getattr(self.real, name)


_shared: tuple[str, _SharedConnection] | None = None
"""The database a commit writes in one transaction now, and its connection."""


def connect(database: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A connection to `database`: the running commit's shared one when it is that
    commit's database (`one_transaction`), else a new one."""
    if _shared is not None and os.path.realpath(database) == _shared[0]:
        return _shared[1]
    return sqlite3.connect(database, **kwargs)


class _SqliteForKishu(types.ModuleType):
    """`sqlite3` as kishu's storage modules see it during `one_transaction`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(sqlite3, name)

    @staticmethod
    def connect(database: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        if args:  # positional settings (timeout, ...): kishu passes none
            return sqlite3.connect(database, *args, **kwargs)
        return connect(database, **kwargs)


@contextlib.contextmanager
def one_transaction(database: str | os.PathLike[str]) -> Iterator[None]:
    """Make everything kishu and gpushift write to `database` in the block one SQLite
    transaction: committed (synced) once at the end, rolled back whole on any error.
    kishu commits some fifteen times per checkpoint (each group, the commit entry,
    graph, branch, variable versions), each synced to disk. One transaction is also all
    or nothing: a checkpoint that fails half-way (the volume filled) leaves nothing."""
    global _shared  # noqa: PLW0603 - the kernel's one commit at a time
    if _shared is not None:
        yield
        return
    modules = [sys.modules[f"kishu.storage.{name}"] for name in _KISHU_STORAGE
               if f"kishu.storage.{name}" in sys.modules]
    real = sqlite3.connect(database, timeout=5.0)
    _shared = (os.path.realpath(database), _SharedConnection(real))
    shim = _SqliteForKishu("sqlite3")
    for module in modules:
        module.sqlite3 = shim  # type: ignore[attr-defined]
    try:
        yield
        real.commit()
    except BaseException:
        real.rollback()
        raise
    finally:
        for module in modules:
            module.sqlite3 = sqlite3  # type: ignore[attr-defined]
        _shared = None
        real.close()


def store_variable_snapshots(self: KishuCheckpoint, commit_id: str, vses_to_store: list[Any],
                             user_ns: Any) -> None:
    """kishu's `KishuCheckpoint.store_variable_snapshots`: each group's `dill.dumps` of a
    `{name: value}` dict in chunks of at most `_max_blob_size`, a group that cannot be
    pickled skipped (recorded by `agent._record_not_saved`), a commit after each group
    (a no-op within `one_transaction`). Differences, for speed only: the pickle is made
    by the C pickler where it can be (`pickle_group`) and without copying arrays, and
    each chunk is written into a zero-filled blob (`blobopen`) instead of bound as a
    parameter, which SQLite first copies whole."""
    con = connect(self.database_path)
    try:
        for vs in vses_to_store:
            subset = user_ns.subset(set(vs.name))
            try:
                pickled = pickle_group(subset.to_dict())
            except (dill.PickleError, ValueError, AttributeError, TypeError):
                continue
            for index, chunk in enumerate(pickled.chunks(self._max_blob_size)):
                row = con.execute(
                    "INSERT INTO variable_snapshot VALUES (?, ?, ?, zeroblob(?))",
                    (vs.versioned_name(), commit_id, index, sum(len(part) for part in chunk)))
                assert row.lastrowid is not None
                with con.blobopen(VARIABLE_SNAPSHOT_TABLE, "data", row.lastrowid) as blob:
                    for part in chunk:
                        blob.write(part)
            con.commit()
    finally:
        con.close()


def pickle_group(group: dict[str, Any]) -> Pieces:
    """`dill.dumps(group)` as pieces (`Pieces`): made by Python's C pickler
    (`_DillsBytesPickler`) when every object in it is one that pickler writes as dill
    does, else by dill's own (`pickle_with_dill`)."""
    pieces = Pieces()
    if not pickled_by_c(group, pieces):
        return pickle_with_dill(group)
    pieces.pickler = "c"
    return pieces


def pickled_by_c(group: dict[str, Any], file: Any) -> bool:
    """Whether `_DillsBytesPickler` pickled `group` into `file` (its `write` gets a
    `PickleBuffer` for an array's memory); when not, `file` holds part of a pickle and
    dill's pickler is the one to ask."""
    try:
        c_pickler(file).dump(group)
    except Exception:  # dill's turn: it saves more, or says what failed
        return False
    return True


def c_pickler(file: Any, own: Callable[[Any], Any] | None = None) -> pickle.Pickler:
    """A `_DillsBytesPickler` writing to `file` (which must take a `PickleBuffer`),
    asking `own` first for a reduction (a digest's shortcuts); its `dump` raises where
    dill's pickler must do the work."""
    return _DillsBytesPickler(file, 5, own)


def pickle_with_dill(group: dict[str, Any]) -> Pieces:
    """`dill.dumps(group)`, the same bytes, as pieces (`Pieces`), made by dill's own
    pickler with `_Dispatch` as its type table. (Not a subclass: dill treats a pickler of
    another module as foreign, `is_dill`: it logs every object it saves and saves
    `__main__`'s namespace differently. Not a `save` of our own in front of dill's
    either: that made the pickling of a DataFrame of strings six times slower.)"""
    pieces = Pieces()
    # As dill.dumps makes its pickler: dill's settings for everything not given.
    pickler = dill.Pickler(pieces, dill.settings["protocol"], byref=None, fmode=None,
                           recurse=None)
    pickler.dispatch = _DISPATCH
    pickler.dump(group)
    return pieces


class _NotLikeDill(Exception):
    """An object the C pickler would write otherwise than dill: dill pickles the group."""


def _dill_repr(obj: Any) -> tuple[Any, ...]:
    return (_eval_repr, (obj.__repr__(),))


# The objects dill saves with a handler of its own whose reduction is known (dill's
# save_slice and save_singleton).
_LIKE_DILL: dict[type, Any] = {
    slice: lambda obj: (slice, (obj.start, obj.stop, obj.step)),
    range: _dill_repr, type(...): _dill_repr, type(NotImplemented): _dill_repr,
}
# The classes dill's save_type writes its own way (or by value).
_SPECIAL_CLASSES = frozenset({type(None), type(NotImplemented), type(...), enum.EnumMeta,
                              threading.ExceptHookArgs})


class _DillsBytesPickler(pickle.Pickler):
    """The C pickler writing dill's pickle of plain data (a DataFrame of strings 20x
    faster than dill, whose pickler is pure Python): every object the C pickler does
    not write by itself (str, int, list, dict, ...: the same opcodes as dill's) goes
    through `reducer_override`, which reduces it as dill would, or raises `_NotLikeDill`
    for anything dill saves its own way: a function, class or namedtuple of `__main__`
    or not importable (dill saves those by value), a module, an open file, a lock, an
    array subclass, a ufunc, a module's namespace (found by its `__spec__`), and every
    other type in dill's table.

    It runs at protocol 5 for one reason: an array's memory goes in as a read-only
    `PickleBuffer`, written as the bytes dill writes (BINBYTES8) without a copy. So the
    pickle's header says protocol 5 where dill's says 4; each reduction is protocol
    4's (`__reduce_ex__(4)`, as dill calls it), and a bytearray is the one object
    written with an opcode of protocol 5 (BYTEARRAY8: the C pickler does not ask
    `reducer_override` about one); it unpickles to the same bytearray. (Nor does it ask
    about a `pickle.PickleBuffer`, which dill cannot pickle at protocol 4: the C pickler
    saves the bytes it views, which come back as `bytes` or `bytearray`.)"""

    def __init__(self, file: Any, protocol: int,
                 own: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file, protocol)
        self.own = own
        """A reduction of the caller's own, asked first (None: no answer)."""

    def reducer_override(self, obj: Any) -> Any:
        if self.own is not None and (mine := self.own(obj)) is not None:
            return mine
        kind = type(obj)
        if kind is numpy.ndarray:
            return _array_reduction(obj)
        if isinstance(obj, type):
            if obj in _typemap:  # dill writes builtin types by name: `_load_type`
                return (_load_type, (_typemap[obj],))
            if obj in _SPECIAL_CLASSES or _namedtuple_class(obj) or not _locate_function(obj):
                raise _NotLikeDill(obj)
            return NotImplemented  # by reference, as dill writes an importable class
        if kind is types.FunctionType:
            if not _locate_function(obj):
                raise _NotLikeDill(obj)
            return NotImplemented
        like_dill = _LIKE_DILL.get(kind)
        if like_dill is not None:
            return like_dill(obj)
        if kind in dill.Pickler.dispatch or kind is importlib.machinery.ModuleSpec \
                or isinstance(obj, (numpy.ndarray, numpy.ufunc)):
            raise _NotLikeDill(kind)
        reduce = copyreg.dispatch_table.get(kind)
        return reduce(obj) if reduce is not None else obj.__reduce_ex__(4)


def _namedtuple_class(cls: type) -> bool:
    """As dill tells one (its save_type)."""
    return cls.__bases__ == (tuple,) and all(
        hasattr(cls, name) for name in ("_fields", "_asdict", "_make", "_replace"))


def _array_reduction(obj: Any) -> tuple[Any, ...]:
    """dill's reduction of an array (its save_numpy_array), the memory of a plain
    C-contiguous one as a read-only `PickleBuffer` (see `_save_array`)."""
    plain = _plain_array_reduction(obj, lambda view: pickle.PickleBuffer(view.toreadonly()))
    if plain is not None:
        return plain
    function, arguments, state = obj.__reduce__()
    return (_create_array, (function, arguments, state, getattr(obj, "__dict__", None)))


def _plain_array_reduction(obj: Any, memory: Callable[[memoryview], Any]
                           ) -> tuple[Any, ...] | None:
    """dill's reduction of a plain C-contiguous array with `memory(view of its bytes)`
    where numpy's `__reduce__` puts `tobytes()`, a copy; None for any other array."""
    if obj.dtype.hasobject or not obj.flags.c_contiguous:
        return None
    view = array_bytes(obj)
    if view is None:
        return None
    # Fresh objects, as numpy's `__reduce__` makes them for every array (shared ones
    # would be memoized: other bytes than dill's, for the same values).
    reduced: tuple[Any, Any, Any] = numpy.empty(0).__reduce__()  # type: ignore[assignment]
    function, arguments, template = reduced
    state = (template[0], obj.shape, obj.dtype, False, memory(view))
    return (_create_array, (function, arguments, state, None))


class _RawBytes:
    """An array's memory, where numpy's `__reduce__` puts `tobytes()`, a copy of it."""

    def __init__(self, view: memoryview) -> None:
        self.view = view


def _save_raw_bytes(pickler: Any, obj: _RawBytes) -> None:
    pickler.save_bytes(obj.view)  # memoized as numpy's bytes would be: the same opcodes


def _save_array(pickler: Any, obj: Any) -> None:
    """dill's handler of numpy arrays (`save_numpy_array`), but the data of a plain
    C-contiguous array written straight from its memory. dill saves an array as numpy's
    `__reduce__`, whose state holds `tobytes()`, a copy of all of it, which was then
    copied again into the pickle's BytesIO: for a 500 MiB array, 1 GB more memory and
    0.7 s before SQLite saw a byte."""
    plain = _plain_array_reduction(obj, _RawBytes)
    if plain is not None:
        pickler.save_reduce(*plain, obj=obj)
        return
    dills = dill.Pickler.dispatch.get(numpy.ndarray)  # registered as dill met the array
    if dills is not None:
        dills(pickler, obj)
    else:  # what pickle does for a type without a handler
        pickler.save_reduce(*obj.__reduce_ex__(pickler.proto), obj=obj)


def array_bytes(array: Any) -> memoryview | None:
    """A C-contiguous array's memory as bytes (no copy), or None when it cannot be
    viewed so (then the caller takes dill's or kishu's own path). Viewed as uint8:
    datetime64 arrays, for one, offer no buffer of their own."""
    try:
        return array.reshape(-1).view(numpy.uint8).data  # type: ignore[no-any-return]
    except (ValueError, TypeError, BufferError):
        return None


class _Dispatch(dict[type, Any]):
    """The type table `pickle_group`'s pickler looks its handlers up in (`.get`, once per
    object): ours for plain arrays and their memory, dill's (live: it adds numpy's
    types as it meets them) for everything else."""

    def get(self, key: type, default: Any = None) -> Any:
        if key is numpy.ndarray:
            return _save_array
        if key is _RawBytes:
            return _save_raw_bytes
        return dill.Pickler.dispatch.get(key, default)


_DISPATCH = _Dispatch()


class Pieces:
    """The file `pickle_group` writes: small writes joined, large ones (an array's
    memory, a pickle frame) kept as they are, not copied."""

    LARGE = 1 << 16

    def __init__(self) -> None:
        self.pieces: list[Any] = []
        self.size = 0
        self._small = bytearray()
        self.pickler = "dill"
        """Which pickler wrote it: "c" (`_DillsBytesPickler`) or "dill"."""

    def write(self, data: Any) -> int:
        if isinstance(data, pickle.PickleBuffer):  # an array's memory, from the C pickler
            data = data.raw()
        n = len(data)
        if n >= self.LARGE:
            self._flush()
            self.pieces.append(data)
        else:
            self._small += data
        self.size += n
        return n

    def _flush(self) -> None:
        if self._small:
            self.pieces.append(bytes(self._small))
            self._small = bytearray()

    def chunks(self, limit: int) -> Iterator[list[memoryview]]:
        """The pickle in consecutive chunks of `limit` bytes (the last one shorter), each
        a list of views: kishu's chunks, cut where slicing the whole would cut it."""
        self._flush()
        chunk: list[memoryview] = []
        room = limit
        for piece in self.pieces:
            view = memoryview(piece).cast("B")
            while len(view):
                part = view[:room]
                chunk.append(part)
                room -= len(part)
                view = view[len(part):]
                if room == 0:
                    yield chunk
                    chunk, room = [], limit
        if chunk:
            yield chunk
