"""How gpushift makes kishu cheaper in the kernel, without changing what it detects:
the IdGraph digests (the C pickler's pass, `kishu_patches._c_digest`, else
`kishu_patches._DigestPickler`'s, with arrays and strings digested directly) and the
deferred IRI grammar, ipylab and requests of kishu's import (`kishu_import`)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import dill
import numpy as np
import pandas as pd
import pytest

from gpushift_jupyter.kernel_state import kishu_patches, snapshots


def digest(value: object) -> bytes:
    return kishu_patches._id_graph(value).serialized_hash


PLAIN_DATA = {
    "records": lambda: [{"id": i, "name": f"n{i}", "tags": ["a", "b"]} for i in range(300)],
    "a DataFrame with text": lambda: pd.DataFrame({"n": range(50),
                                                   "s": [str(i) for i in range(50)]}),
    "arrays sharing one": lambda: shared_arrays(np.arange(100.0)),
}


def shared_arrays(array: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": array, "view": array[2:], "again": array}


@pytest.mark.parametrize("name", list(PLAIN_DATA))
def test_plain_data_is_digested_by_the_c_pickler_with_the_addresses_kishus_gives(
        name: str) -> None:
    """The C pickler's pass (`_c_digest`) groups variables as kishu's own pickler did:
    the same addresses of the variable's own objects."""
    value = PLAIN_DATA[name]()
    assert kishu_patches._c_digest(value) is not None
    reachable = kishu_patches._reachable(value)
    kishus = {key for key in kishu_patches._kishu_digest(value).memo if key in reachable}
    assert kishu_patches._id_graph(value).addresses == kishus
    assert digest(value) == digest(PLAIN_DATA[name]())


def self_holding_list() -> list[object]:
    items: list[object] = [1, "x"]
    items.append(items)
    return items


def shared_inner() -> dict[str, object]:
    inner = [b"bytes", bytearray(b"ba"), (1.5, None, 2**70)]
    return {"a": inner, "b": inner, "c": (inner, inner)}


CONTAINERS_ONLY = {
    "records": PLAIN_DATA["records"],
    "tuple and frozenset keys": lambda: {(1, "a"): [1], frozenset({2, 3}): {"k": (4,)},
                                         "s": {(5, 6), "t"}},
    "one list twice": shared_inner,
    "a list holding itself": self_holding_list,
    "a string": lambda: "text",
    "bytes": lambda: b"bytes",
    "empty ones": lambda: [(), [], {}, set(), frozenset(), "", b"", bytearray()],
    "a writable PickleBuffer": lambda: [pickle.PickleBuffer(bytearray(b"abc"))],
}


@pytest.mark.parametrize("name", list(CONTAINERS_ONLY))
def test_containers_only_skip_the_walk_with_the_addresses_it_gives(name: str) -> None:
    """What the C pickler writes by itself (atoms and the built-in containers) has no
    temporaries in its memo: the addresses are the walk's without walking."""
    value = CONTAINERS_ONLY[name]()
    found = kishu_patches._c_digest(value)
    assert found is not None and found.containers_only
    reachable = kishu_patches._reachable(value)
    walked = {key for key in found.memo if key in reachable}
    assert kishu_patches._own_addresses(value, found.memo) == walked
    assert kishu_patches._id_graph(value).addresses == walked


@pytest.mark.parametrize("value", [
    [1 + 2j], [np.float64(1.0)], {"t": int}, {"f": len}, [range(3)], collections.OrderedDict(),
    [np.arange(3)], pd.DataFrame({"n": [1]}),
], ids=["complex", "numpy scalar", "a class", "a builtin function", "range", "OrderedDict",
        "array", "DataFrame"])
def test_anything_reduced_or_referenced_is_still_walked(value: object) -> None:
    """Reductions make temporaries and global references memoize module names: the C
    pickler asked about such an object, so the walk filters the memo as before."""
    found = kishu_patches._c_digest(value)
    assert found is not None and not found.containers_only


def test_what_the_c_pickler_leaves_to_kishu_is_digested_by_kishus_pickler() -> None:
    """A lambda (dill saves it by value) and a generator (nothing pickles it: kishu goes
    on past it and marks the variable changed)."""
    assert kishu_patches._c_digest({"f": lambda v: v}) is None
    graph = kishu_patches._id_graph({"g": (i for i in range(3)), "n": [1]})
    assert graph.definitely_changed


def test_equal_values_have_equal_digests_and_a_copy_is_not_the_same_object() -> None:
    array = np.random.default_rng(1).random(10_000)
    assert digest(array) == digest(array.copy())
    frame = pd.DataFrame({"n": range(50), "s": [str(i) for i in range(50)]})
    assert digest(frame) == digest(frame.copy())
    graph = kishu_patches._id_graph(array)
    assert id(array) in graph.addresses  # overlap detection still sees the array


@pytest.mark.parametrize("change", [
    lambda a: a.__setitem__(5, a[5] + 1.0),
    lambda a: a.reshape(100, 100),
    lambda a: a.astype(np.float32),
    lambda a: np.asfortranarray(a.reshape(100, 100)),
    lambda a: a.reshape(100, 100).T,
    lambda a: a[::2],
])
def test_any_change_of_an_array_changes_its_digest(change: object) -> None:
    array = np.random.default_rng(2).random(10_000)
    before = digest(array)
    if callable(change):
        changed = change(array)
    after = digest(array if changed is None else changed)
    assert after != before


def test_strings_and_records_are_told_apart() -> None:
    assert digest(["ab", "c"]) != digest(["a", "bc"])
    assert digest("\udcff") != digest("")  # lone surrogates hash too
    records = np.zeros(3, dtype=[("x", "f8"), ("y", "i4")])
    other = records.copy()
    other["y"][1] = 3
    assert digest(records) != digest(other)
    frame = pd.DataFrame({"s": ["a", "b"]})
    edited = frame.copy()
    edited.loc[1, "s"] = "c"
    assert digest(frame) != digest(edited)


@pytest.mark.parametrize("make", [
    lambda: np.arange("2024-01-01", "2024-02-01", dtype="datetime64[D]"),
    lambda: np.array(2.5),
    lambda: np.zeros((0, 3)),
    lambda: np.array(["ab", "cd"]),
    lambda: np.arange(10, dtype=">i4"),
])
def test_every_plain_array_kind_is_digested_and_its_changes_seen(
        make: Callable[[], np.ndarray]) -> None:
    array = make()
    before = digest(array)
    assert before == digest(make())
    flat = array.reshape(-1)  # a view: changing it changes the array
    if flat.size:
        flat[0] = flat[-1] if flat.size > 1 else flat[0] * 2
        assert digest(array) != before


def test_arrays_of_objects_take_kishus_own_path() -> None:
    inner = [1]
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = inner, [2]
    before = digest(objects)
    inner.append(3)  # a change inside an element, the array's bytes (pointers) unchanged
    assert digest(objects) != before


def test_an_array_of_strings_is_digested_whole_and_its_changes_seen() -> None:
    """A text column (an object array of str only) takes the joined-digest path; any
    change of its content, cut or shape changes the digest; anything but str in it
    takes kishu's path."""
    def texts(*items: str) -> np.ndarray:
        array = np.empty(len(items), dtype=object)
        array[:] = list(items)
        return array

    words = texts("ab", "c", "\udcff", "")
    assert kishu_patches._strings_digest(words) is not None
    assert digest(words) == digest(texts("ab", "c", "\udcff", ""))
    for other in (texts("a", "bc", "\udcff", ""), texts("ab", "c", "\udcff", "x"),
                  texts("ab", "c", "", "\udcff"), words.reshape(2, 2),
                  words.reshape(2, 2).T, texts("ab", "c")):
        assert digest(other) != digest(words), other
    mixed = texts("ab", "c", "d", "e")
    mixed[3] = 7
    assert kishu_patches._strings_digest(mixed) is None
    assert digest(mixed) != digest(texts("ab", "c", "d", "7"))
    frame = pd.DataFrame({"s": [str(i) for i in range(1000)]})
    before = digest(frame)
    frame.loc[500, "s"] = "changed"
    assert digest(frame) != before


def test_an_installed_module_is_not_walked_and_groups_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy (stored by name) is not walked: its IdGraph's addresses are what walking its
    namespace gave. A module of the user's own is stored by value and still walked: a
    variable sharing its data is grouped with it."""
    assert kishu_patches._reachable(np) == {id(np)}
    fast = kishu_patches._id_graph(np).addresses
    monkeypatch.setattr(kishu_patches, "_pickled_by_reference", lambda _module: False)
    assert len(kishu_patches._reachable(np)) > 100  # what the walk goes through
    assert kishu_patches._id_graph(np).addresses == fast
    monkeypatch.undo()
    (tmp_path / "user_helpers.py").write_text("items = [[1, 2], [3]]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_helpers  # type: ignore[import-not-found]
    assert not kishu_patches._pickled_by_reference(user_helpers)
    shared = user_helpers.items[0]
    assert kishu_patches._id_graph(user_helpers).is_overlap(kishu_patches._id_graph(shared))


def test_kishu_imports_without_building_the_iri_grammar_and_iri_checks_still_work() -> None:
    """As the driver sends them to a kernel: the format checkers' stand-ins, then the
    import; ipylab and requests are imported only when a name of theirs is first read."""
    checkers = resources.files("gpushift_jupyter").joinpath("format_checkers.py").read_text()
    source = resources.files("gpushift_jupyter.kernel_state").joinpath(
        "kishu_import.py").read_text()
    script = (
        "import sys, types\n"
        "for name, text in [('_gpushift_format_checkers', " + repr(checkers) + "), "
        "('_gpushift_kishu_import', " + repr(source) + ")]:\n"
        "    module = sys.modules[name] = types.ModuleType(name)\n"
        "    exec(compile(text, '<' + name + '>', 'exec'), module.__dict__)\n"
        "assert 'kishu.jupyterint' in sys.modules\n"
        "assert 'rfc3987_syntax.syntax_helpers' not in sys.modules, 'grammar was built'\n"
        "assert 'rfc3987_syntax' not in sys.modules, 'the stand-in stayed'\n"
        "assert 'rfc3986_validator' not in sys.modules, 'the stand-in stayed'\n"
        "import jsonschema\n"
        "checker = jsonschema.FormatChecker()\n"
        "assert checker.conforms('http://example.com/\u00fc', 'iri')\n"
        "assert not checker.conforms('::no iri', 'iri')\n"
        "import rfc3987_syntax\n"
        "assert not getattr(rfc3987_syntax, '__gpushift_stand_in__', False)\n"
        "assert rfc3987_syntax.is_valid_syntax('iri', 'http://example.com/')\n"
        # What gpushift never calls in kishu is not imported, and works when it is.
        "assert 'ipylab' not in sys.modules and 'requests' not in sys.modules\n"
        "assert 'ipywidgets' not in sys.modules\n"
        "assert sys.modules['_gpushift_kishu_import'].seconds > 0\n"
        "from kishu import jupyterint\n"
        "from kishu.jupyter import runtime\n"
        "assert callable(runtime.requests.get) and 'requests' in sys.modules\n"
        "import requests\n"
        "assert not getattr(requests, '__gpushift_stand_in__', False)\n"
        "assert runtime.requests.Session is requests.Session\n"
        "import requests.adapters\n"
        "assert jupyterint.ipylab.JupyterFrontEnd.__module__.startswith('ipylab')\n"
        "import ipylab\n"
        "assert not getattr(ipylab, '__gpushift_stand_in__', False)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_group_loads_the_same_from_its_chunks_wherever_they_are_cut(protocol: int) -> None:
    """kishu keeps a large group in several blob chunks; the unpickler reads them in
    order without joining them (`snapshots.ChunkReader`)."""
    value = {"big": np.arange(50_000, dtype=np.float64), "text": "line\nbreak ü",
             "frame": pd.DataFrame({"s": ["a", "b"]}), "nested": [{"k": (1, 2.5)}]}
    data = dill.dumps(value, protocol=protocol)
    for cuts in ([], [1], [7, 8, 9], [len(data) // 3, len(data) // 2],
                 list(range(1, len(data), 4099))):
        edges = [0, *cuts, len(data)]
        chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
        loaded, moved = snapshots.loads(chunks)
        assert not moved
        assert np.array_equal(loaded["big"], value["big"])
        assert loaded["frame"].equals(value["frame"])
        assert (loaded["text"], loaded["nested"]) == (value["text"], value["nested"])


@pytest.mark.parametrize("piece", [1, 5, 4096, snapshots.ChunkReader.PIECE])
@pytest.mark.parametrize("protocol", [0, 4])
def test_a_group_loads_the_same_from_blobs_read_a_piece_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int, piece: int) -> None:
    """A restore reads each blob chunk a piece at a time (`ChunkReader.PIECE`) into the
    unpickler, never the whole row at once; pieces cut values, lines (protocol 0 reads
    lines) and chunks anywhere."""
    monkeypatch.setattr(snapshots.ChunkReader, "PIECE", piece)
    value = {"big": np.arange(3_000, dtype=np.float64), "text": "line\nbreak ü",
             "frame": pd.DataFrame({"s": ["a", "b"]}), "nested": [{"k": (1, 2.5)}]}
    data = dill.dumps(value, protocol=protocol)
    edges = [0, 3, len(data) // 2, len(data)]
    con = sqlite3.connect(tmp_path / "chunks.sqlite")
    con.execute("create table variable_snapshot (versioned_name text, commit_id text, "
                "chunk_id int, data blob)")
    rows = [con.execute("insert into variable_snapshot values ('1,v', 'c', ?, ?)",
                        (index, data[a:b])).lastrowid
            for index, (a, b) in enumerate(itertools.pairwise(edges))]
    con.commit()
    with contextlib.ExitStack() as opened:
        blobs = [opened.enter_context(con.blobopen("variable_snapshot", "data", row or 0,
                                                   readonly=True)) for row in rows]
        unpickler = snapshots.SafeUnpickler(blobs)
        loaded = unpickler.load()
    con.close()
    assert np.array_equal(loaded["big"], value["big"])
    assert loaded["frame"].equals(value["frame"])
    assert (loaded["text"], loaded["nested"]) == (value["text"], value["nested"])
    assert unpickler.reader.read_s > 0
