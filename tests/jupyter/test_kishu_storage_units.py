"""The pickle a checkpoint stores (`kishu_storage.pickle_group`) is byte for byte
`dill.dumps` of the same group (so restores, old and new, read it as before), made
without copying the arrays; its chunks are kishu's."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from typing import Any

import dill
import numpy as np
import pandas as pd
import pytest

from gpushift_jupyter.kernel_state import kishu_storage, snapshots


class Grid(np.ndarray):  # an array subclass: dill's path, untouched
    pass


def joined(group: dict[str, Any], limit: int = 1 << 40) -> bytes:
    return b"".join(bytes(part) for chunk in kishu_storage.pickle_group(group).chunks(limit)
                    for part in chunk)


shared = np.arange(1000.0)
CASES: dict[str, dict[str, Any]] = {
    "float 1-d": {"a": np.random.default_rng(1).random(100_000)},
    "several arrays of one dtype": {f"a{i}": np.arange(10 * i, dtype=np.int64)
                                    for i in range(6)},
    "2-d C order": {"m": np.arange(12.0).reshape(3, 4)},
    "Fortran order (dill's path)": {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4))},
    "a strided view (dill's path)": {"v": np.arange(100.0)[::3]},
    "0-d and empty": {"z": np.array(3.5), "e": np.empty((0, 4))},
    "small kinds": {"b": np.array([True, False]), "i8": np.arange(5, dtype=np.int8),
                    "c": np.array([1 + 2j]), "u": np.array(["ab", "cdé"]),
                    "s": np.array([b"x", b"yz"])},
    "big-endian and records": {"be": np.arange(5, dtype=">f8"),
                               "r": np.array([(1, 2.0)], dtype=[("x", "i4"), ("y", "f8")])},
    "datetimes": {"t": np.array(["2026-12-05", "2027-01-01"], dtype="datetime64[D]"),
                  "d": np.array([1, 2], dtype="timedelta64[s]")},
    "objects (dill's path)": {"o": np.array([{"k": 1}, None, "s"], dtype=object)},
    "a subclass (dill's path)": {"g": np.arange(6.0).view(Grid)},
    "one array twice": {"x": shared, "y": shared, "pair": (shared, shared[:10])},
    "a DataFrame": {"df": pd.DataFrame({"n": range(1000), "s": [str(i) for i in range(1000)],
                                        "t": pd.date_range("2026-01-01", periods=1000)})},
    "plain values": {"n": 1, "text": "ü\n", "when": dt.date(2026, 12, 5), "l": [1, [2]]},
    "larger than a frame": {"big": np.random.default_rng(2).random(300_000).reshape(1000, 300)},
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_bytes_as_dill(name: str) -> None:
    group = CASES[name]
    data = joined(group)
    assert data == dill.dumps(group)
    loaded, _ = snapshots.loads(data)
    assert loaded.keys() == group.keys()


@pytest.mark.parametrize("limit", [1, 7, 4096, 65536, 1 << 20])
def test_chunks_are_cut_where_kishu_cuts_them(limit: int) -> None:
    group = {"a": np.random.default_rng(3).random(200_000), "s": "x" * 70_000, "n": 5}
    whole = dill.dumps(group)
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
