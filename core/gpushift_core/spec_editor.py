"""Editing a Notebook's pod spec field by field, keeping the record of what each edit
replaced.

Both directions of a move plan with it: the move to GPU (`move_plan`) and the move back
(`rollback_record`). Every edit goes into one `PatchBuilder` (`gpushift_core.patches`)
and into the plan's record (returned as `MovePlan.previous_profile`): each touched
field's slot before and after (`{"present": False}` when absent), the parents
(`resources`, `limits`, `nodeSelector`, `tolerations`) that were missing or null, and the
tolerations added or removed. The record of a move to GPU is what the move back restores
from. The image map lookups are here too: both directions swap the image by them.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpushift_core.admin_settings import ImagePair
from gpushift_core.patches import PatchBuilder, Path

__all__ = [
    "MISSING",
    "RECORD_VERSION",
    "SECTIONS",
    "SPEC",
    "WHOLE_FIELDS",
    "SpecEditor",
    "cpu_image_for",
    "gpu_image_for",
    "same_toleration",
]

RECORD_VERSION = 1
SPEC: Path = ("spec", "template", "spec")
# What `SpecEditor._get` answers for an absent field: None is a value (JSON null).
MISSING: Any = object()
SECTIONS = ("limits", "requests")
# Fields recorded whole (fields[name]); the others by key (fields[section][key]).
WHOLE_FIELDS = ("image", "runtimeClassName", "affinity")


def gpu_image_for(image: str, image_map: Sequence[ImagePair], kind: str = "cuda",
                  ) -> str | None:
    """The GPU build of kind `kind` ("cuda", "rocm", "gaudi") of a CPU image (exact
    match), None when the image is in no pair or its pair has no build of that kind."""
    return next((p.gpu_image(kind) for p in image_map
                 if p.cpu == image and p.gpu_image(kind)), None)


def cpu_image_for(image: str, image_map: Sequence[ImagePair]) -> str | None:
    """The CPU image of a GPU build of any kind (exact match), None when it is in no pair."""
    return next((p.cpu for p in image_map if image in p.gpu_images()), None)


def _slot(value: Any) -> dict[str, Any]:
    return {"present": False} if value is MISSING else {"present": True, "value": value}


def _parent_state(value: Any) -> str:
    return "missing" if value is MISSING else "null" if value is None else "present"


def _normal_toleration(t: Mapping[str, Any]) -> dict[str, Any]:
    """A toleration as Kubernetes reads it: empty fields dropped, operator Equal by default."""
    out = {k: v for k, v in t.items() if v not in (None, "")}
    out.setdefault("operator", "Equal")
    return out


def same_toleration(a: Any, b: Mapping[str, Any]) -> bool:
    return isinstance(a, Mapping) and _normal_toleration(a) == _normal_toleration(b)


class SpecEditor:
    """One plan's edits of the notebook container and its pod spec, and their record.
    `move_plan` and `rollback_record` subclass it with the edits of each direction."""

    def __init__(self, notebook: Mapping[str, Any], index: int, name: str,
                 image_map: Sequence[ImagePair]) -> None:
        self.pb = PatchBuilder(notebook)
        self.container: Path = (*SPEC, "containers", index)
        self.image_map = image_map
        self.notes: list[str] = []
        self.done: list[str] = []
        self.record: dict[str, Any] = {
            "version": RECORD_VERSION,
            "container": {"name": name, "index": index},
            "fields": {},
            "tolerations": {"added": [], "removed": []},
            "parents": {},
        }

    # -- field primitives (each records what was there) ---------------------------------

    def _get(self, path: Path) -> Any:
        return self.pb.value_at(path, MISSING)

    def _put(self, parent: Path, key: str, value: Any) -> None:
        """parent[key] = value: replace when there, else add (creating parents)."""
        if self._get((*parent, key)) is MISSING:
            self.pb.set_key(parent, key, value)
        else:
            self.pb.replace((*parent, key), value)

    def _note_parent(self, name: str, path: Path) -> None:
        """Remember that a parent the move is about to fill did not exist (or was null)."""
        state = _parent_state(self._get(path))
        if state != "present":
            self.record["parents"].setdefault(name, state)

    def _set(self, section: str, parent: Path, key: str, value: Any) -> bool:
        """Set parent[key] = value, recording the old slot under fields[section][key]."""
        old = self._get((*parent, key))
        if old is not MISSING and old == value:
            return False
        entry = {"before": _slot(old), "after": _slot(value)}
        fields = self.record["fields"]
        if section in WHOLE_FIELDS:
            fields[section] = entry
        else:
            fields.setdefault(section, {})[key] = entry
        self._put(parent, key, value)
        return True

    def _unset(self, section: str, parent: Path, key: str) -> bool:
        old = self._get((*parent, key))
        if old is MISSING:
            return False
        entry = {"before": _slot(old), "after": _slot(MISSING)}
        if section in WHOLE_FIELDS:
            self.record["fields"][section] = entry
        else:
            self.record["fields"].setdefault(section, {})[key] = entry
        self.pb.remove((*parent, key))
        return True

    def _drop_if_emptied(self, path: Path, state: str) -> None:
        """Put back a parent that was missing (remove) or null once it is empty again."""
        value = self._get(path)
        if value not in ({}, []) or state == "present":
            return
        if state == "missing":
            self.pb.remove(path)
        elif state == "null":
            self.pb.replace(path, None)

    # -- summary --------------------------------------------------------------------------

    def summary(self, target: str) -> str:
        name = self.record["container"]["name"]
        profile = self.record.get("profile")
        head = f"to {target.upper()}" + (f" (profile {profile})" if profile else "")
        body = "; ".join(self.done) if self.done else "nothing to change"
        notes = "".join(f"; note: {n}" for n in self.notes)
        return f"{head}, container {name}: {body}{notes}"
