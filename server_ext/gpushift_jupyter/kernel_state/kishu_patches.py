"""Changes to kishu 0.3.4's behaviour in the kernel (sent to the kernel as the module
`_gpushift_kishu_patches`, used by `agent`; see the reasons there and below)."""

from __future__ import annotations

import gc
import io
import sys
import types
from pathlib import Path
from typing import Any, NamedTuple

import dill  # type: ignore[import-untyped,unused-ignore]
import numpy
import xxhash
from kishu.planning.idgraph import IdGraph, TrackedPickler
from kishu.storage.checkpoint import KishuCheckpoint
from kishu.storage.config import Config
from kishu.storage.path import KishuPath

pinned: dict[tuple[str, str], Any] = {}
databases: dict[str, Path] = {}
"""Resolved notebook path -> where gpushift keeps its kishu database."""


def place_database(notebook_path: str, database: str) -> None:
    """Make kishu keep `notebook_path`'s database at `database` (the workspace's hidden
    folder) instead of beside the notebook. kishu asks `KishuPath.database_path` in
    several places (`KishuForJupyter.database_path`, and `KishuConnection`, which
    records the kernel's connection), so that is the one answer changed; other
    notebooks keep kishu's own answer."""
    databases[str(Path(notebook_path).resolve())] = Path(database)
    if getattr(KishuPath.database_path, "_gpushift_placed", False):
        return
    original = KishuPath.database_path

    def placed(notebook: Path) -> Path:
        found = databases.get(str(Path(notebook).resolve()))
        return found if found is not None else original(notebook)

    placed._gpushift_placed = True  # type: ignore[attr-defined]
    KishuPath.database_path = staticmethod(placed)  # type: ignore[method-assign, assignment]


def apply_patches(settings: list[list[Any]]) -> None:
    """Make kishu's `Config.get` answer `settings` ([category, entry, value] triples,
    `agent_settings.PINNED_SETTINGS`) whatever its shared config.ini says, and its
    `IdGraph.from_object` group variables by shared data only (`_id_graph`)."""
    pinned.update({(str(c), str(e)): v for c, e, v in settings})
    if getattr(Config.get, "_gpushift_pinned", False):
        return
    original = Config.get

    def pinned_get(category: str, entry: str, default: Any) -> Any:
        if (category, entry) in pinned:
            value = pinned[(category, entry)]
            return list(value) if isinstance(value, list) else value  # callers mutate lists
        return original(category, entry, default)

    pinned_get._gpushift_pinned = True  # type: ignore[attr-defined]
    Config.get = staticmethod(pinned_get)  # type: ignore[method-assign, assignment]
    IdGraph.from_object = staticmethod(_id_graph)  # type: ignore[method-assign]
    KishuCheckpoint.store_variable_snapshots = (  # type: ignore[method-assign]
        _storage().store_variable_snapshots)


def _storage() -> Any:
    """`kishu_storage` as the kernel has it (`driver` sends it first), else imported."""
    module = sys.modules.get("_gpushift_kishu_storage")
    if module is None:
        from gpushift_jupyter.kernel_state import kishu_storage as module  # noqa: PLC0415
    return module


class LiveNamespace(dict[str, Any]):
    """What kishu's `Namespace` wraps: here the kernel's real namespace (not a copy).
    Everything counts as accessed, nothing as assigned: commits happen only at
    checkpoints, and then every variable may have changed since the previous one."""

    def __init__(self, user_ns: dict[str, Any]) -> None:
        super().__init__()
        self.real = user_ns

    def __getitem__(self, key: str) -> Any:
        return self.real[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.real[key] = value

    def __delitem__(self, key: str) -> None:
        del self.real[key]

    def __contains__(self, key: object) -> bool:
        return key in self.real

    def __iter__(self) -> Any:
        return iter(list(self.real))

    def __len__(self) -> int:
        return len(self.real)

    def keys(self) -> Any:
        return self.real.keys()

    def items(self) -> Any:
        return list(self.real.items())

    def get(self, key: str, default: Any = None) -> Any:
        return self.real.get(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.real.update(*args, **kwargs)

    def accessed_vars(self) -> set[str]:
        return set(self.real)

    def reset_accessed_vars(self) -> None:
        pass

    def assigned_vars(self) -> set[str]:
        return set()

    def reset_assigned_vars(self) -> None:
        pass


def _shared_by_reference(obj: Any) -> bool:
    """Objects pickle stores by reference (modules; classes and functions importable
    from a module other than __main__) or immutable ones (strings such as the module
    names in every global reference, numbers, numpy dtypes): two variables that both
    mention one do not share data."""
    if isinstance(obj, str | bytes | int | float | complex | types.ModuleType | numpy.dtype):
        return True
    if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        return getattr(obj, "__module__", None) not in (None, "__main__")
    return False


def _id_graph(obj: Any) -> IdGraph:
    """kishu's `IdGraph.from_object`, with only the addresses of data the variable
    holds. kishu links two variables into one group (stored again in full when any of
    them changes) when their pickles memoize an object with the same id(). It counts
    every memoized object: the module-name strings of every global reference, shared
    classes and dtypes, and temporaries made while pickling (freed afterwards, so their
    addresses are reused by the next variable's temporaries). A notebook's arrays,
    DataFrames and everything near them became one group.

    The digest is of the checkpoint's own pickle when the C pickler can make it
    (`kishu_storage.c_pickler`: plain data, 20-50x faster than a pickler in Python),
    else of `_DigestPickler`'s (which, as kishu's, goes on past what it cannot pickle
    and marks the variable changed)."""
    found = _c_digest(obj) or _kishu_digest(obj)
    if found.containers_only:
        addresses = _own_addresses(obj, found.memo)
    else:
        # Only objects the variable holds (reachable from it) count: the others in the
        # memo are temporaries of the pickling, whose addresses are reused once freed.
        reachable = _reachable(obj)
        addresses = {key for key in found.memo if key in reachable}
    return IdGraph(root_id=id(obj), root_type=type(obj), serialized_hash=found.digest,
                   addresses=addresses, definitely_changed=found.definitely_changed)


class _Digest(NamedTuple):
    """A variable's digest, what its pickle memoized (id -> (index, object)), and
    whether it counts as changed whatever the digest."""

    digest: bytes
    memo: dict[int, tuple[int, Any]]
    definitely_changed: bool
    containers_only: bool = False
    """The C pickler wrote it all by itself: atoms and the built-in containers (dict,
    list, tuple, set, frozenset, bytearray, PickleBuffer), no reduction and no global
    reference (CPython's `save()` checks those types before it asks
    `reducer_override`)."""


def _own_addresses(root: Any, memo: dict[int, tuple[int, Any]]) -> set[int]:
    """`_reachable`'s filter of `memo`, for a pickle of built-in containers and atoms
    only: each object it memoized is an item of a container it saved (the edges
    `gc.get_referents` follows), so all are the variable's own; the walk would only
    drop the strings and bytes (shared by reference) other than `root` itself. A list
    of 20 000 small dicts: the walk took ~150 ms at every checkpoint and restore."""
    return {key for key, (_, value) in memo.items()
            if value is root or type(value) not in _SHARED_ATOMS}


# Of what `_shared_by_reference` names, the only kinds a containers-only pickle memoizes
# (the C pickler asks about modules, types and functions; numbers are never memoized).
# Not that function itself: its isinstance over seven types made this 7 -> 60 ms for
# 20 000 dicts. The tests compare the two filters.
_SHARED_ATOMS = (str, bytes)


def _c_digest(obj: Any) -> _Digest | None:
    """The digest of the C pickler's pickle; None when only kishu's pickler can go on."""
    digest = xxhash.xxh3_128()
    asked = _Asked()
    pickler = _storage().c_pickler(_Digesting(digest), asked)
    try:
        pickler.dump(obj)
    except Exception:  # what only kishu's pickler goes through (or past)
        return None
    return _Digest(digest.digest(), pickler.memo.copy(), False, not asked.any)


class _Asked:
    """`_digest_shortcut`, noting whether the C pickler asked for a reduction at all: it
    asks about every object but the atoms and the built-in containers, which it writes
    itself (see `_DillsBytesPickler`)."""

    def __init__(self) -> None:
        self.any = False

    def __call__(self, obj: Any) -> tuple[Any, ...] | None:
        self.any = True
        return _digest_shortcut(obj)


def _kishu_digest(obj: Any) -> _Digest:
    buffer = io.BytesIO()
    pickler = _DigestPickler(buffer, dill.HIGHEST_PROTOCOL, recurse=True)  # type: ignore[no-untyped-call]
    pickler.dump(obj)
    digest = xxhash.xxh3_128()
    digest.update(buffer.getvalue())
    return _Digest(digest.digest(), pickler.memo, pickler.definitely_changed)


def _digest_shortcut(obj: Any) -> tuple[Any, ...] | None:
    """The C pickler's digest of an array of strings only (a text column): its
    `_strings_digest`, the strings not pickled and memoized one by one (the IdGraph of
    a DataFrame with 20 000 strings: 6.4 -> 1.6 ms). Never unpickled: only its bytes
    are digested."""
    if type(obj) is numpy.ndarray and obj.dtype.hasobject:
        digest = _strings_digest(obj)
        if digest is not None:
            return (bytes, (digest,))
    return None


class _Digesting:
    """The file a pickle is digested into as it is written (an array's memory comes as
    a `PickleBuffer`, digested where it lies)."""

    def __init__(self, digest: Any) -> None:
        self.update = digest.update

    def write(self, data: Any) -> int:
        self.update(data)
        return 0


class _DigestPickler(TrackedPickler):
    """kishu's `TrackedPickler` (what an IdGraph hashes), with its two costliest cases done
    directly. Its output is only ever hashed and compared with another of its own outputs
    in the same kernel (an IdGraph is never stored), so it need not be a loadable pickle.
    - A plain numpy array with no Python objects in it: its dtype, shape, order and an
      xxh3 digest of its bytes, instead of pickling a copy of them (`__reduce__` copies
      the data, BytesIO copies it again, and the whole stream is hashed once more). A
      500 MiB state took 0.84 s to hash, at every checkpoint and after every restore.
    - A string: its length and UTF-8 bytes, instead of a whole `dill.dumps` per string
      (kishu's path for immutables: a DataFrame of 20 000 strings made 20 000 picklers).
    - An array of strings only (a DataFrame's text column): the strings' lengths and
      their text joined, digested in one go, instead of saving each string (10 ms for
      20 000 strings, at every checkpoint and restore; 1 ms this way).
    Other arrays holding objects, array subclasses and everything else take kishu's
    path."""

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        kind = type(obj)
        if kind is str:
            data = obj.encode("utf-8", "surrogatepass")
            self.write(b"S%d:" % len(data) + data)
        elif kind is numpy.ndarray and (digest := (
                _array_digest(obj) if not obj.dtype.hasobject else
                _strings_digest(obj))) is not None:
            self.write(digest)
            self._memoize(obj, save_persistent_id)
        else:
            super().save(obj, save_persistent_id)


def _strings_digest(array: Any) -> bytes | None:
    """None unless `array` is a plain object array holding only `str` (exactly)."""
    if array.dtype != object:
        return None
    items = array.ravel().tolist()  # C order; the objects themselves, not copies
    if set(map(type, items)) - {str}:
        return None
    digest = xxhash.xxh3_128()
    digest.update(numpy.fromiter(map(len, items), dtype=numpy.int64, count=len(items)).tobytes())
    digest.update("".join(items).encode("utf-8", "surrogatepass"))
    header = f"O{array.shape}{array.flags.f_contiguous:d}:"
    return header.encode() + digest.digest()


def _array_digest(array: Any) -> bytes | None:
    """None when the array's bytes cannot be viewed (then kishu's path hashes it)."""
    try:
        contiguous = array if array.flags.c_contiguous else numpy.ascontiguousarray(array)
    except (ValueError, TypeError):
        return None
    data = _storage().array_bytes(contiguous)
    if data is None:
        return None
    digest = xxhash.xxh3_128()
    digest.update(data)
    header = f"A{array.dtype.descr!r}{array.shape}{array.flags.f_contiguous:d}:"
    return header.encode() + digest.digest()


def _pickled_by_reference(module: types.ModuleType) -> bool:
    """dill stores an installed module (numpy, pandas) as its name; a module of the
    user's own (beside the notebook) by value, its namespace and all. dill's own test."""
    is_builtin = getattr(dill._dill, "_is_builtin_module", None)
    return is_builtin is not None and bool(is_builtin(module))


def _reachable(root: Any) -> set[int]:
    """id() of every object reachable from `root`, not looking inside objects shared by
    reference nor into the user's namespace (a function's globals). A variable that is
    an installed module (`np`) is stored by name: walking its namespace (thousands of
    objects: 10 ms for numpy in a kernel, at every checkpoint and restore) would only
    find addresses its pickle never memoizes."""
    if isinstance(root, types.ModuleType) and _pickled_by_reference(root):
        return {id(root)}
    namespace = sys.modules["__main__"].__dict__
    seen = {id(root)}
    stack = [root]
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if id(ref) in seen or ref is namespace or _shared_by_reference(ref):
                continue
            seen.add(id(ref))
            stack.append(ref)
    return seen
