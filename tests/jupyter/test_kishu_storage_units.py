"""The pickle a checkpoint stores (`kishu_storage.pickle_group`) is `dill.dumps` of the
same group (so restores, old and new, read it as before), made without copying the
arrays; its chunks are kishu's. Plain data goes through the C pickler, whose pickle is
dill's byte for byte but for the protocol in its header (5: an array's memory goes in
without a copy) and a bytearray's opcode; anything dill saves its own way goes through
dill's pickler, whose pickle is dill's to the byte."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import pickle
import threading
import tracemalloc
import types
from typing import Any

import dill
import numpy as np
import pandas as pd
import pytest

from gpushift_jupyter.kernel_state import kishu_storage, snapshots


class Grid(np.ndarray):  # an array subclass: dill's pickler
    pass


class Color(enum.Enum):  # importable: by reference, as dill writes it
    RED = 1


Pair = collections.namedtuple("Pair", "a b")  # dill writes a namedtuple class its own way


# What a notebook cell defines (its globals: a kernel's namespace): dill saves it by value.
in_main = types.FunctionType((lambda: 1).__code__, {"__name__": "__main__"}, "in_main")


def joined(group: dict[str, Any], limit: int = 1 << 40) -> bytes:
    return b"".join(bytes(part) for chunk in kishu_storage.pickle_group(group).chunks(limit)
                    for part in chunk)


def as_c_pickler_writes(dills: bytes) -> bytes:
    """dill's pickle with the header the C pickler writes (protocol 5)."""
    assert dills[:2] == b"\x80\x04"
    return b"\x80\x05" + dills[2:]


shared = np.arange(1000.0)
C_PICKLER: dict[str, dict[str, Any]] = {
    "float 1-d": {"a": np.random.default_rng(1).random(100_000)},
    "several arrays of one dtype": {f"a{i}": np.arange(10 * i, dtype=np.int64)
                                    for i in range(6)},
    "2-d C order": {"m": np.arange(12.0).reshape(3, 4)},
    "Fortran order": {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4))},
    "a strided view": {"v": np.arange(100.0)[::3]},
    "0-d and empty": {"z": np.array(3.5), "e": np.empty((0, 4))},
    "small kinds": {"b": np.array([True, False]), "i8": np.arange(5, dtype=np.int8),
                    "c": np.array([1 + 2j]), "u": np.array(["ab", "cdé"]),
                    "s": np.array([b"x", b"yz"])},
    "big-endian and records": {"be": np.arange(5, dtype=">f8"),
                               "r": np.array([(1, 2.0)], dtype=[("x", "i4"), ("y", "f8")])},
    "datetimes": {"t": np.array(["2026-12-05", "2027-01-01"], dtype="datetime64[D]"),
                  "d": np.array([1, 2], dtype="timedelta64[s]")},
    "objects": {"o": np.array([{"k": 1}, None, "s"], dtype=object)},
    "one array twice": {"x": shared, "y": shared, "pair": (shared, shared[:10])},
    "a DataFrame": {"df": pd.DataFrame({"n": range(1000), "s": [str(i) for i in range(1000)],
                                        "t": pd.date_range("2026-01-01", periods=1000)})},
    "a Series of categories": {"s": pd.Series(pd.Categorical(["a", "b", "a"] * 100))},
    "plain values": {"n": 1, "text": "ü\n", "when": dt.date(2026, 12, 5), "l": [1, [2]]},
    "larger than a frame": {"big": np.random.default_rng(2).random(300_000).reshape(1000, 300)},
    "numpy scalars and a dtype": {"f": np.float64(1.5), "i": np.int32(3), "s": np.str_("x"),
                                  "d": np.dtype("f4")},
    "the standard library's types": {
        "od": collections.OrderedDict(a=1), "dd": collections.defaultdict(list, a=[1]),
        "count": collections.Counter("abca"), "when": dt.datetime(2026, 12, 7, 3, 4),
        "dec": decimal.Decimal("1.5"), "cx": 1 + 2j, "set": {1, 2}, "frozen": frozenset("x"),
        "bytes": b"\x00" * 70_000},
    "dill's own singletons and slices": {"r": range(5), "sl": slice(1, None, 2),
                                         "e": Ellipsis, "ni": NotImplemented},
    "importable classes, functions and an Enum": {"cls": pd.DataFrame, "types": [int, type],
                                                  "f": np.sum, "len": len, "c": Color.RED},
}
DILLS_PICKLER: dict[str, dict[str, Any]] = {
    "a subclass": {"g": np.arange(6.0).view(Grid)},
    "a lambda": {"f": lambda v: v + 1, "df": pd.DataFrame({"s": ["x"] * 10})},
    "a function of __main__": {"f": in_main},
    "a namedtuple": {"p": Pair(1, 2)},
    "a module": {"m": np},
    "a module's namespace": {"ns": dt.__dict__},
    "a lock": {"lock": threading.Lock(), "n": 1},
    "a ufunc": {"u": np.add},
}


@pytest.mark.parametrize("name", list(C_PICKLER))
def test_plain_data_is_dills_pickle_made_by_the_c_pickler(name: str) -> None:
    group = C_PICKLER[name]
    pieces = kishu_storage.pickle_group(group)
    data = joined(group)
    assert pieces.pickler == "c"
    assert data == as_c_pickler_writes(dill.dumps(group))
    loaded, _ = snapshots.loads(data)
    assert loaded.keys() == group.keys()


@pytest.mark.parametrize("name", list(DILLS_PICKLER))
def test_what_dill_saves_its_own_way_is_pickled_by_dill(name: str) -> None:
    group = DILLS_PICKLER[name]
    assert kishu_storage.pickle_group(group).pickler == "dill"
    assert joined(group) == dill.dumps(group)


def test_a_pickle_buffer_dill_cannot_pickle_comes_back_as_the_bytes_it_viewed() -> None:
    group = {"ro": pickle.PickleBuffer(b"abc"), "rw": pickle.PickleBuffer(bytearray(b"xy"))}
    with pytest.raises(pickle.PicklingError):
        dill.dumps(group)
    assert kishu_storage.pickle_group(group).pickler == "c"
    loaded, _ = snapshots.loads(joined(group))
    assert loaded == {"ro": b"abc", "rw": bytearray(b"xy")}


def test_a_bytearray_unpickles_as_dill_s_does() -> None:
    group = {"b": bytearray(b"\x01\x02"), "empty": bytearray(), "n": 3}
    assert kishu_storage.pickle_group(group).pickler == "c"
    loaded, _ = snapshots.loads(joined(group))
    assert loaded == dill.loads(dill.dumps(group)) == group


@pytest.mark.parametrize("limit", [1, 7, 4096, 65536, 1 << 20])
def test_chunks_are_cut_where_kishu_cuts_them(limit: int) -> None:
    group = {"a": np.random.default_rng(3).random(200_000), "s": "x" * 70_000, "n": 5}
    whole = as_c_pickler_writes(dill.dumps(group))
    chunks = [b"".join(bytes(part) for part in chunk)
              for chunk in kishu_storage.pickle_group(group).chunks(limit)]
    assert chunks == [whole[i:i + limit] for i in range(0, len(whole), limit)]


def test_a_large_array_is_pickled_without_a_copy_of_it() -> None:
    """dill.dumps of a 64 MiB array allocates twice its size (numpy's tobytes copy, then
    the BytesIO); the store's pickle, a few frames."""
    array = np.random.default_rng(4).random(8 * 2**20)  # 64 MiB
    tracemalloc.start()
    try:
        pieces = kishu_storage.pickle_group({"a": array})
        _, ours = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        reference = dill.dumps({"a": array})
        _, dills = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pieces.size == len(reference)
    assert ours < 4 * 2**20, ours
    assert dills > 2 * array.nbytes - 2**20, dills
