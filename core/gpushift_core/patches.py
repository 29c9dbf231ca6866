"""The one place that builds JSON Patches (RFC 6902) for admission responses.

A patch is a list of operations applied in order to the *original* object, so this
builder tracks which parents exist — in the original or created by an earlier
operation of the same patch — and:
  * creates a missing parent instead of adding below it (`/metadata/annotations`,
    `/spec/initContainers`, `/spec/volumes`, `/spec/containers/0/env`);
  * escapes `~` and `/` in keys (`gpushift.io/injected` -> `gpushift.io~1injected`);
  * appends to lists with `/-`, never by index, so it never overwrites an element.

`replace` and `remove` change or drop what is there (the original's value, or one an
earlier operation of the patch put there) and refuse a path where nothing is. From the
first of them on, the builder follows the patched document itself (a copy of the
original with each operation applied), so later operations see every earlier change;
`value_at` reads that document. Add-only patches (the webhook's) never copy.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonpatch
import orjson

Path = tuple[str | int, ...]
_NO_VALUE: Any = object()


def escape(segment: str | int) -> str:
    """Escape one path segment as RFC 6901 requires."""
    text = str(segment)
    if "~" in text or "/" in text:
        return text.replace("~", "~0").replace("/", "~1")
    return text


# The pointers of the paths seen: the same few come back in every patch (the webhook adds
# the same ones to every pod, `/spec/containers/0/env` among them). A path of strings maps
# to its text. A path with an int maps to its texts by the types of its segments: a path
# with a bool compares equal to the one with that int (1 == True) but is written otherwise
# ("/a/True"), and no string equals an int, so the two kinds of key never meet.
_POINTERS: dict[Path, str | dict[tuple[type, ...], str]] = {}
_POINTERS_MAX = 4096


def pointer(path: Path) -> str:
    cached = _POINTERS.get(path)
    if type(cached) is str:
        return cached
    types = tuple(map(type, path))
    if cached is not None:
        assert isinstance(cached, dict)
        text = cached.get(types)
        if text is not None:
            return text
    text = _pointer_text(path)
    if cached is not None:
        cached[types] = text
    elif len(_POINTERS) < _POINTERS_MAX:
        _POINTERS[path] = text if all(kind is str for kind in types) else {types: text}
    return text


def _pointer_text(path: Path) -> str:
    # Joined as they are, the segments need no escaping when the text has no "~" and
    # no "/" but the separators (nearly every path).
    text = "/".join(map(str, path))
    if "~" in text or text.count("/") != len(path) - 1:
        return "".join(["/" + escape(s) for s in path])
    return "/" + text if path else text


class PatchConflict(ValueError):
    """The original object has a value of the wrong type where the patch must add, or
    nothing where it must replace or remove."""


class PatchBuilder:
    """Accumulates operations against one original object."""

    def __init__(self, original: Mapping[str, Any]) -> None:
        self._original = original
        self._ops: list[dict[str, Any]] = []
        # Values this patch added, by path: later operations may add below them.
        self._created: dict[Path, Any] = {}
        # The patched document, once a replace/remove made tracking by path unsound.
        self._doc: Any = None

    @property
    def operations(self) -> list[dict[str, Any]]:
        return list(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def test(self, path: Path, value: Any) -> None:
        """Fail the whole patch unless `path` holds `value` (optimistic concurrency)."""
        self._ops.append({"op": "test", "path": pointer(path), "value": value})

    def set_key(self, parent: Path, key: str, value: Any) -> None:
        """Set `parent[key] = value`, creating the mapping `parent` if it is missing."""
        if self._exists(parent, Mapping):
            self._add((*parent, key), value)
        else:
            self._add_missing(parent, {key: value})

    def append(self, parent: Path, item: Any) -> None:
        """Append `item` to the list at `parent`, creating the list if it is missing."""
        if self._exists(parent, list):
            self._add((*parent, "-"), item, record=False)
        else:
            self._add_missing(parent, [item])

    def append_all(self, parent: Path, items: Sequence[Any]) -> None:
        for item in items:
            self.append(parent, item)

    def replace(self, path: Path, value: Any) -> None:
        """Replace the value at `path`; PatchConflict if nothing is there."""
        self._require(path, "replace")
        self._emit("replace", path, value)

    def remove(self, path: Path) -> None:
        """Remove the key or list element at `path`; PatchConflict if nothing is there.

        Removing a list element shifts the later ones down, as RFC 6902 says: to remove
        several, remove the highest index first (or ask `value_at` again)."""
        self._require(path, "remove")
        self._emit("remove", path)

    def value_at(self, path: Path, default: Any = None) -> Any:
        """The value at `path` in the document as patched so far (`default` if none).

        The document's own objects: read them, do not change them."""
        node = self._document()
        for segment in path:
            try:
                node = _child(node, segment)
            except PatchConflict:  # below a scalar
                return default
            if node is _MISSING:
                return default
        return node

    # -- internals ---------------------------------------------------------------

    def _add_missing(self, path: Path, value: Any) -> None:
        """Add `value` at `path`, wrapping it in new mappings for each missing parent."""
        depth = len(path)
        while depth > 1 and not self._exists(path[: depth - 1], Mapping):
            depth -= 1
        for segment in reversed(path[depth:]):
            value = {segment: value}
        self._add(path[:depth], value)

    def _add(self, path: Path, value: Any, *, record: bool = True) -> None:
        if self._doc is not None:
            self._emit("add", path, value)
            return
        self._ops.append({"op": "add", "path": pointer(path), "value": value})
        if record:
            self._created[path] = value

    def _emit(self, op: str, path: Path, value: Any = _NO_VALUE) -> None:
        """Append an operation and apply it to the patched document."""
        doc = self._document()
        entry: dict[str, Any] = {"op": op, "path": pointer(path)}
        if value is not _NO_VALUE:
            entry["value"] = value
        self._ops.append(entry)
        # The document gets its own copy: later operations below this value must not
        # change the value this operation carries.
        self._doc = _apply_one(doc, op, path, copy.deepcopy(value))

    def _document(self) -> Any:
        """The patched document, built from the original and the operations so far."""
        if self._doc is None:
            doc: Any = copy.deepcopy(dict(self._original))
            for op in self._ops:
                if op["op"] != "test":
                    # A copy: the document must not share values with the operations.
                    doc = jsonpatch.apply_patch(doc, [copy.deepcopy(op)], in_place=True)
            self._doc = doc
        return self._doc

    def _require(self, path: Path, verb: str) -> None:
        if not path:
            raise PatchConflict(f"cannot {verb} the whole document")
        if self.value_at(path, _MISSING) is _MISSING:
            raise PatchConflict(f"{pointer(path)}: nothing there to {verb}")

    def _exists(self, path: Path, kind: type) -> bool:
        """Whether a `kind` container is at `path`; PatchConflict if something else is."""
        if not path:
            return True
        node: Any = self._original
        start = 0
        if self._doc is not None:
            node = self._doc
        elif self._created:  # nothing added yet (the usual case): no prefix to look up
            for depth in range(len(path), 0, -1):
                if path[:depth] in self._created:
                    node, start = self._created[path[:depth]], depth
                    break
        for segment in path[start:]:
            # A key of a mapping, inline: the usual step, and this runs for every
            # operation the builder adds.
            if isinstance(node, dict) and isinstance(segment, str):
                node = node.get(segment, _MISSING)
            else:
                node = _child(node, segment)
            if node is _MISSING:
                return False
        if node is None:
            return False
        if not isinstance(node, dict if kind is Mapping else kind):
            raise PatchConflict(f"{pointer(path)} is a {type(node).__name__}, "
                                f"not a {'list' if kind is list else 'mapping'}")
        return True


_MISSING = object()


def _apply_one(doc: Any, op: str, path: Path, value: Any) -> Any:
    """Apply one add/replace/remove to `doc` in place (paths are checked by the caller)."""
    *parents, last = path
    node = doc
    for segment in parents:
        node = node[segment]
    if op == "remove":
        del node[last]
    elif isinstance(node, list):
        if op == "replace":
            node[int(last)] = value
        elif last == "-":
            node.append(value)
        else:
            node.insert(int(last), value)
    else:
        node[last] = value
    return doc


def _child(node: Any, segment: str | int) -> Any:
    if isinstance(node, dict) and isinstance(segment, str):
        return node.get(segment, _MISSING)
    if isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
        return node[segment]
    if node is None:
        return _MISSING
    raise PatchConflict(f"cannot add below a {type(node).__name__}")


def encode(operations: list[dict[str, Any]]) -> str:
    """The patch as AdmissionReview carries it: base64 of its JSON.

    The builder only makes well-formed operations, so this serialises them
    directly; `apply` (jsonpatch) is what checks them, in the tests.
    """
    return base64.b64encode(dumps(operations)).decode()


def dumps(value: Any, *, sort_keys: bool = False,
          default: Callable[[Any], Any] | None = None) -> bytes:
    """`value` as compact UTF-8 JSON: orjson's, or, for what orjson cannot write (an int
    beyond 64 bits, which a pod parsed by `json` may hold), json's same text.
    `default`: what to write for an object neither knows (`str` for a log line)."""
    try:
        return orjson.dumps(value, default=default,
                            option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"),
                          ensure_ascii=False, default=default).encode()


def apply(original: Mapping[str, Any], operations: list[dict[str, Any]]) -> Any:
    """Apply a patch to a copy of `original` (for tests and for checking our own work)."""
    return jsonpatch.apply_patch(json.loads(json.dumps(original)), operations)
