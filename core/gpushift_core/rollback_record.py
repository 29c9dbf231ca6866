"""The move back to CPU: the patch that undoes a move to GPU, from the move's
previous-profile record or without one.

To CPU with that record (`previous`): every recorded field is put back as it was, the
added tolerations removed and the created parents dropped again, so CPU -> GPU -> CPU
gives back the original `spec.template` exactly. Without a record (a notebook created on
a GPU), or with one that found a GPU already there: the limits and requests of every
configured GPU resource are removed, the image swapped CUDA -> CPU by the map, and the
node selector entries, tolerations, runtimeClassName and affinity of the profile (the
one passed, or the one in `profiles` whose resource the notebook holds) removed where
they match; its CPU/memory stay (what the notebook had before is not known).

Pure, like `move_plan`, whose `plan_move` is the entry point of both directions.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.labels import PREVIOUS_PROFILE_ANNOTATION, annotations_of, json_object
from gpushift_core.patches import Path
from gpushift_core.spec_editor import (
    SECTIONS,
    SPEC,
    SpecEditor,
    cpu_image_for,
    same_toleration,
)

__all__ = ["RollbackPlanner", "holds_recorded_gpu", "read_previous_profile", "restorable"]


def read_previous_profile(notebook: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of the last move to GPU, from its Notebook annotation
    (`PREVIOUS_PROFILE_ANNOTATION`; None when there is none or it is not a JSON object)."""
    return json_object(annotations_of(notebook).get(PREVIOUS_PROFILE_ANNOTATION))


def _nonzero(quantity: Any) -> bool:
    return str(quantity).strip() not in ("", "0")


def restorable(record: Mapping[str, Any]) -> bool:
    """Whether the record holds the CPU original: the move put the GPU limit there."""
    resource = record.get("resource")
    entry = ((record.get("fields") or {}).get("limits") or {}).get(resource)
    if not isinstance(entry, Mapping):
        return False
    before = entry.get("before") or {}
    return not before.get("present") or not _nonzero(before.get("value"))


def holds_recorded_gpu(notebook: Mapping[str, Any], index: int,
                       record: Mapping[str, Any]) -> bool:
    """Whether container `index` holds the GPU the record's move put there (a record left
    from a move since undone describes a GPU the notebook no longer has)."""
    node: Any = notebook
    for key in (*SPEC, "containers", index, "resources", "limits"):
        if isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return False
    resource = record.get("resource")
    return isinstance(node, Mapping) and isinstance(resource, str) and _nonzero(
        node.get(resource, "0"))


def _profile_named(profiles: Sequence[GpuProfile], name: Any) -> GpuProfile | None:
    return next((p for p in profiles if p.name == name), None)


def _profile_held(plan: RollbackPlanner, profiles: Sequence[GpuProfile]) -> GpuProfile | None:
    """The profile whose resource the notebook container holds (same count preferred)."""
    limits = plan.pb.value_at((*plan.container, "resources", "limits"))
    if not isinstance(limits, Mapping):
        return None
    held = [p for p in profiles if p.resource in limits and _nonzero(limits[p.resource])]
    same = [p for p in held if str(limits[p.resource]) == str(p.count)]
    return next(iter(same or held), None)


class RollbackPlanner(SpecEditor):
    """The edits of a move back to CPU, recorded like those of a move to GPU."""

    def to_cpu(self, profile: GpuProfile | None, previous: Mapping[str, Any] | None,
               gpu_resources: Sequence[str], profiles: Sequence[GpuProfile]) -> None:
        """Restore from `previous` when it holds the CPU original, else take the GPU
        fields away (of `profile`, the record's profile, or the one the notebook holds)."""
        if previous is not None and restorable(previous):
            self.restore(previous, gpu_resources)
        else:
            if previous is not None:
                self.notes.append("the record of the move to GPU found a GPU already there: "
                                  "taking the profile's fields away instead")
                profile = profile or _profile_named(profiles, previous.get("profile"))
            self.strip(profile or _profile_held(self, profiles), gpu_resources)

    # -- to CPU with the record -------------------------------------------------------------

    def restore(self, record: Mapping[str, Any], gpu_resources: Sequence[str]) -> None:
        c = self.container
        fields = record.get("fields") or {}
        parents = record.get("parents") or {}
        self.record.update(target="cpu", profile=record.get("profile"),
                           resource=record.get("resource"), count=record.get("count"))

        image = fields.get("image")
        if isinstance(image, Mapping):
            now = self._get((*c, "image"))
            after = (image.get("after") or {}).get("value")
            if now != after:
                self.notes.append(f"image changed to {now} since the move: "
                                  f"restoring {image['before'].get('value')} anyway")
            self._restore_key("image", c, "image", image)

        for section in SECTIONS:
            parent = (*c, "resources", section)
            for key, entry in (fields.get(section) or {}).items():
                before = entry.get("before") or {}
                if key in gpu_resources and before.get("present") and _nonzero(
                        before.get("value")):
                    self.notes.append(f"{section} {key}={before.get('value')} was there before "
                                      "the move: removed, a CPU pod holds no GPU")
                    self._unset(section, parent, key)
                else:
                    self._restore_key(section, parent, key, entry)
            self._strip_gpu_section(section, gpu_resources, drop_emptied=False)
            self._drop_if_emptied(parent, str(parents.get(section, "present")))
        self._drop_if_emptied((*c, "resources"), str(parents.get("resources", "present")))

        for key, entry in (fields.get("nodeSelector") or {}).items():
            self._restore_key("nodeSelector", (*SPEC, "nodeSelector"), key, entry)
        self._drop_if_emptied((*SPEC, "nodeSelector"),
                              str(parents.get("nodeSelector", "present")))

        added = list((record.get("tolerations") or {}).get("added") or [])
        for t in reversed(added):
            current = self._get((*SPEC, "tolerations"))
            current = current if isinstance(current, list) else []
            matches = [i for i, x in enumerate(current) if same_toleration(x, t)]
            if matches:
                self.pb.remove((*SPEC, "tolerations", matches[-1]))
                self.record["tolerations"]["removed"].append(copy.deepcopy(dict(t)))
            else:
                self.notes.append(f"toleration {t} was already gone")
        if self.record["tolerations"]["removed"]:
            self.done.append(f"{len(self.record['tolerations']['removed'])} toleration(s) "
                             "removed")
        self._drop_if_emptied((*SPEC, "tolerations"), str(parents.get("tolerations", "present")))

        for whole in ("runtimeClassName", "affinity"):
            entry = fields.get(whole)
            if isinstance(entry, Mapping):
                self._restore_key(whole, SPEC, whole, entry)

    def _restore_key(self, section: str, parent: Path, key: str,
                     entry: Mapping[str, Any]) -> None:
        before = entry.get("before") or {}
        label = key if section == key else f"{section} {key}"
        if before.get("present"):
            value = before.get("value")
            if self._set(section, parent, key, value):
                # A structured field (affinity) is too long for a one-line summary.
                shown = value if isinstance(value, (str, int, float)) else "the original"
                self.done.append(f"{label} restored to {shown}")
        elif self._unset(section, parent, key):
            self.done.append(f"{label} removed")

    # -- to CPU without a record ----------------------------------------------------------

    def _strip_gpu_section(self, section: str, gpu_resources: Sequence[str], *,
                           drop_emptied: bool) -> None:
        parent = (*self.container, "resources", section)
        values = self._get(parent)
        if not isinstance(values, Mapping):
            return
        removed = False
        for key in gpu_resources:
            if key in values and _nonzero(values[key]) and self._unset(section, parent, key):
                self.done.append(f"{section} {key} removed")
                removed = True
        if drop_emptied and removed:
            self._drop_if_emptied(parent, "missing")

    def strip(self, profile: GpuProfile | None, gpu_resources: Sequence[str]) -> None:
        c = self.container
        self.record.update(target="cpu", profile=profile.name if profile else None)
        for section in SECTIONS:
            self._strip_gpu_section(section, gpu_resources, drop_emptied=True)

        image = self._get((*c, "image"))
        cpu = cpu_image_for(image, self.image_map) if isinstance(image, str) else None
        if cpu is not None:
            if self._set("image", c, "image", cpu):
                self.done.append(f"image {image} -> {cpu}")
        elif not any(pair.cpu == image for pair in self.image_map):
            self.notes.append(f"image {image} is not in the image map: kept")

        if profile is None:
            self.notes.append("no profile matches the GPU the notebook holds: "
                              "node selector and tolerations kept")
            return
        selector = (*SPEC, "nodeSelector")
        removed_any = False
        for key, value in profile.node_selector.items():
            if self._get((*selector, key)) == value and self._unset("nodeSelector",
                                                                    selector, key):
                self.done.append(f"nodeSelector {key} removed")
                removed_any = True
        if removed_any:
            self._drop_if_emptied(selector, "missing")

        tolerations = (*SPEC, "tolerations")
        removed = self.record["tolerations"]["removed"]
        for t in profile.tolerations:
            current = self._get(tolerations)
            current = current if isinstance(current, list) else []
            for i in reversed(range(len(current))):
                if same_toleration(current[i], t):
                    removed.append(copy.deepcopy(current[i]))
                    self.pb.remove((*tolerations, i))
        if removed:
            self.done.append(f"{len(removed)} toleration(s) removed")
            self._drop_if_emptied(tolerations, "missing")

        rcn = profile.runtime_class_name
        if rcn and self._get((*SPEC, "runtimeClassName")) == rcn:
            self._unset("runtimeClassName", SPEC, "runtimeClassName")
            self.done.append("runtimeClassName removed")
        if profile.affinity and self._get((*SPEC, "affinity")) == profile.affinity:
            self._unset("affinity", SPEC, "affinity")
            self.done.append("affinity of the profile removed")
        if profile.resources:
            self.notes.append("the profile's CPU/memory kept: without the record of the "
                              "move to GPU the notebook's own values are not known")
