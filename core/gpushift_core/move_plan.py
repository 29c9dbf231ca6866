"""The JSON Patch that moves a Notebook between CPU and GPU, and the record to undo it.

Pure: a Notebook (as the API returns it) in, a `MovePlan` out. The notebook-controller
copies `spec.template.spec` into the StatefulSet, so patching it recreates pod
`<name>-0` with the new spec.

To GPU (`profile` required), on the notebook container and its pod spec:
  * `resources.limits[profile.resource] = str(profile.count)` (and the same request
    when the container already requests that resource: Kubernetes wants them equal);
  * image CPU -> CUDA by an exact match in the image map (an image not in the map is
    kept, and the summary says so);
  * `nodeSelector` gets the profile's entries, `tolerations` the profile's ones not
    already there, `runtimeClassName` the profile's (when it has one).
`previous_profile` records exactly what was there before each touched field: the value
or its absence, the parents (`resources`, `limits`, `nodeSelector`, `tolerations`) the
move created, and the tolerations it added.

To CPU with that record (`previous`): every recorded field is put back as it was, the
added tolerations removed and the created parents dropped again, so CPU -> GPU -> CPU
gives back the original `spec.template` exactly. Without a record (a notebook created on
a GPU), or with one that found a GPU already there: the limits and requests of every
configured GPU resource are removed, the image swapped CUDA -> CPU by the map, and the
node selector entries, tolerations and runtimeClassName of the profile (the one passed,
or the one in `profiles` whose resource the notebook holds) removed where they match.

Every patch touches only those fields and starts with a `test` of
`/metadata/resourceVersion`: applied to a Notebook that changed since it was read, it
fails as a whole (the API answers 422), and the caller reads again and re-plans
(`gpushift_core.kube.KubeApi.patch_notebook`). A plan that changes nothing has no
operations at all.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES, GpuProfile, ImagePair
from gpushift_core.patches import PatchBuilder, PatchConflict, Path

__all__ = [
    "RECORD_VERSION",
    "MovePlan",
    "PlanError",
    "cpu_image_for",
    "cuda_image_for",
    "find_container",
    "plan_move",
]

RECORD_VERSION = 1
SPEC: Path = ("spec", "template", "spec")
RESOURCE_VERSION: Path = ("metadata", "resourceVersion")
_MISSING: Any = object()
_SECTIONS = ("limits", "requests")


class PlanError(ValueError):
    """The move cannot be planned: bad target, no profile, no such container, a spec
    of the wrong shape, or a record this code does not understand."""


@dataclass(frozen=True)
class MovePlan:
    operations: list[dict[str, Any]]
    """The JSON Patch (RFC 6902), `test` of the resourceVersion first; empty when the
    Notebook is already as the target wants it."""
    previous_profile: dict[str, Any]
    """What the touched fields held before (JSON-serialisable); pass it as `previous`
    of the move back to restore them."""
    summary: str
    """One line for logs, Events and the user."""

    @property
    def changes(self) -> int:
        """How many operations change something (the `test` is not a change)."""
        return sum(1 for op in self.operations if op["op"] != "test")


def cuda_image_for(image: str, image_map: Sequence[ImagePair]) -> str | None:
    """The CUDA image of a CPU image (exact match), None when it is not in the map."""
    return next((p.cuda for p in image_map if p.cpu == image), None)


def cpu_image_for(image: str, image_map: Sequence[ImagePair]) -> str | None:
    """The CPU image of a CUDA image (exact match), None when it is not in the map."""
    return next((p.cpu for p in image_map if p.cuda == image), None)


def find_container(notebook: Mapping[str, Any], container: str | int | None = None,
                   ) -> tuple[int, str]:
    """(index, name) of the notebook container: by name, by index, or container 0."""
    containers = _spec(notebook).get("containers")
    if not isinstance(containers, list) or not containers:
        raise PlanError("the Notebook has no containers in spec.template.spec")
    if isinstance(container, str) and container:
        for i, c in enumerate(containers):
            if isinstance(c, dict) and c.get("name") == container:
                return i, container
        names = [c.get("name") for c in containers if isinstance(c, dict)]
        raise PlanError(f"the Notebook has no container {container!r} (it has {names})")
    index = container if isinstance(container, int) else 0
    if not 0 <= index < len(containers) or not isinstance(containers[index], dict):
        raise PlanError(f"the Notebook has no container at index {index}")
    return index, str(containers[index].get("name", ""))


def plan_move(
    notebook: Mapping[str, Any],
    target: str,
    profile: GpuProfile | None = None,
    image_map: Sequence[ImagePair] = (),
    *,
    container: str | int | None = None,
    previous: Mapping[str, Any] | None = None,
    gpu_resources: Sequence[str] = tuple(DEFAULT_GPU_RESOURCES),
    profiles: Sequence[GpuProfile] = (),
) -> MovePlan:
    """The patch that moves `notebook` to `target` ("gpu" or "cpu").

    `container`: the notebook container's name or index (default: container 0).
    `previous`: for "cpu", the `previous_profile` of the move to GPU.
    `gpu_resources`, `profiles`: for "cpu" without a usable record, which limits count
    as GPUs and which profile's scheduling fields to take away.
    """
    target = str(target)
    if target not in ("gpu", "cpu"):
        raise PlanError(f"target must be 'gpu' or 'cpu', not {target!r}")
    rv = (notebook.get("metadata") or {}).get("resourceVersion")
    if not rv:
        raise PlanError("the Notebook has no metadata.resourceVersion (not read from the API?)")
    if previous is not None and target == "cpu":
        version = previous.get("version")
        if version != RECORD_VERSION or previous.get("target") != "gpu":
            raise PlanError(f"previous profile record not understood (version {version!r}, "
                            f"target {previous.get('target')!r})")
        name = (previous.get("container") or {}).get("name")
        if name and container is None:
            container = str(name)
    index, name = find_container(notebook, container)
    plan = _Planner(notebook, index, name, image_map)
    try:
        if target == "gpu":
            if profile is None:
                raise PlanError("a move to GPU needs a profile")
            plan.to_gpu(profile)
        elif previous is not None and _restorable(previous):
            plan.restore(previous, gpu_resources)
        else:
            if previous is not None:
                plan.notes.append("the record of the move to GPU found a GPU already there: "
                                  "taking the profile's fields away instead")
                profile = profile or _profile_named(profiles, previous.get("profile"))
            plan.strip(profile or _profile_held(plan, profiles), gpu_resources)
    except PatchConflict as exc:
        raise PlanError(f"the Notebook's spec has an unexpected shape: {exc}") from None
    ops = plan.pb.operations
    if ops:
        ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": rv})
    return MovePlan(ops, plan.record, plan.summary(target))


# --------------------------------------------------------------------------- planning


def _spec(notebook: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = notebook
    for key in SPEC:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _slot(value: Any) -> dict[str, Any]:
    return {"present": False} if value is _MISSING else {"present": True, "value": value}


def _parent_state(value: Any) -> str:
    return "missing" if value is _MISSING else "null" if value is None else "present"


def _nonzero(quantity: Any) -> bool:
    return str(quantity).strip() not in ("", "0")


def _normal_toleration(t: Mapping[str, Any]) -> dict[str, Any]:
    """A toleration as Kubernetes reads it: empty fields dropped, operator Equal by default."""
    out = {k: v for k, v in t.items() if v not in (None, "")}
    out.setdefault("operator", "Equal")
    return out


def _same_toleration(a: Any, b: Mapping[str, Any]) -> bool:
    return isinstance(a, Mapping) and _normal_toleration(a) == _normal_toleration(b)


def _restorable(record: Mapping[str, Any]) -> bool:
    """Whether the record holds the CPU original: the move put the GPU limit there."""
    resource = record.get("resource")
    entry = ((record.get("fields") or {}).get("limits") or {}).get(resource)
    if not isinstance(entry, Mapping):
        return False
    before = entry.get("before") or {}
    return not before.get("present") or not _nonzero(before.get("value"))


def _profile_named(profiles: Sequence[GpuProfile], name: Any) -> GpuProfile | None:
    return next((p for p in profiles if p.name == name), None)


def _profile_held(plan: _Planner, profiles: Sequence[GpuProfile]) -> GpuProfile | None:
    """The profile whose resource the notebook container holds (same count preferred)."""
    limits = plan.pb.value_at((*plan.container, "resources", "limits"))
    if not isinstance(limits, Mapping):
        return None
    held = [p for p in profiles if p.resource in limits and _nonzero(limits[p.resource])]
    same = [p for p in held if str(limits[p.resource]) == str(p.count)]
    return next(iter(same or held), None)


class _Planner:
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
        return self.pb.value_at(path, _MISSING)

    def _put(self, parent: Path, key: str, value: Any) -> None:
        """parent[key] = value: replace when there, else add (creating parents)."""
        if self._get((*parent, key)) is _MISSING:
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
        if old is not _MISSING and old == value:
            return False
        entry = {"before": _slot(old), "after": _slot(value)}
        fields = self.record["fields"]
        if section in ("image", "runtimeClassName"):
            fields[section] = entry
        else:
            fields.setdefault(section, {})[key] = entry
        self._put(parent, key, value)
        return True

    def _unset(self, section: str, parent: Path, key: str) -> bool:
        old = self._get((*parent, key))
        if old is _MISSING:
            return False
        entry = {"before": _slot(old), "after": _slot(_MISSING)}
        if section == "runtimeClassName":
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

    # -- to GPU ---------------------------------------------------------------------------

    def to_gpu(self, profile: GpuProfile) -> None:
        c = self.container
        self.record.update(target="gpu", profile=profile.name, resource=profile.resource,
                           count=profile.count)
        image = self._get((*c, "image"))
        cuda = cuda_image_for(image, self.image_map) if isinstance(image, str) else None
        if cuda is not None:
            if self._set("image", c, "image", cuda):
                self.done.append(f"image {image} -> {cuda}")
        elif isinstance(image, str) and cpu_image_for(image, self.image_map) is not None:
            self.notes.append(f"image {image} is already a CUDA image")
        else:
            self.notes.append(f"image {image} is not in the image map: kept")

        count = str(profile.count)
        for section in _SECTIONS:
            parent = (*c, "resources", section)
            if section == "requests" and self._get((*parent, profile.resource)) is _MISSING:
                continue  # only limits are needed; a request must equal the limit
            old = self._get((*parent, profile.resource))
            if old is not _MISSING and str(old) == count:
                continue
            self._note_parent("resources", (*c, "resources"))
            self._note_parent(section, parent)
            self._set(section, parent, profile.resource, count)
            self.done.append(f"{section} {profile.resource}={count}")

        if profile.node_selector:
            self._note_parent("nodeSelector", (*SPEC, "nodeSelector"))
        for key, value in profile.node_selector.items():
            if self._set("nodeSelector", (*SPEC, "nodeSelector"), key, value):
                self.done.append(f"nodeSelector {key}={value}")

        current = self._get((*SPEC, "tolerations"))
        current = current if isinstance(current, list) else []
        added = self.record["tolerations"]["added"]
        for t in profile.tolerations:
            if any(_same_toleration(x, t) for x in (*current, *added)):
                continue
            if not added:
                self._note_parent("tolerations", (*SPEC, "tolerations"))
            self.pb.append((*SPEC, "tolerations"), dict(t))
            added.append(copy.deepcopy(dict(t)))
        if added:
            self.done.append(f"{len(added)} toleration(s) added")

        if profile.runtime_class_name and self._set(
                "runtimeClassName", SPEC, "runtimeClassName", profile.runtime_class_name):
            self.done.append(f"runtimeClassName {profile.runtime_class_name}")

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

        for section in _SECTIONS:
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
            matches = [i for i, x in enumerate(current) if _same_toleration(x, t)]
            if matches:
                self.pb.remove((*SPEC, "tolerations", matches[-1]))
                self.record["tolerations"]["removed"].append(copy.deepcopy(dict(t)))
            else:
                self.notes.append(f"toleration {t} was already gone")
        if self.record["tolerations"]["removed"]:
            self.done.append(f"{len(self.record['tolerations']['removed'])} toleration(s) "
                             "removed")
        self._drop_if_emptied((*SPEC, "tolerations"), str(parents.get("tolerations", "present")))

        rcn = fields.get("runtimeClassName")
        if isinstance(rcn, Mapping):
            self._restore_key("runtimeClassName", SPEC, "runtimeClassName", rcn)

    def _restore_key(self, section: str, parent: Path, key: str,
                     entry: Mapping[str, Any]) -> None:
        before = entry.get("before") or {}
        label = key if section == key else f"{section} {key}"
        if before.get("present"):
            if self._set(section, parent, key, before.get("value")):
                self.done.append(f"{label} restored to {before.get('value')}")
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
        for section in _SECTIONS:
            self._strip_gpu_section(section, gpu_resources, drop_emptied=True)

        image = self._get((*c, "image"))
        cpu = cpu_image_for(image, self.image_map) if isinstance(image, str) else None
        if cpu is not None:
            if self._set("image", c, "image", cpu):
                self.done.append(f"image {image} -> {cpu}")
        elif not (isinstance(image, str) and cuda_image_for(image, self.image_map)):
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
                if _same_toleration(current[i], t):
                    removed.append(copy.deepcopy(current[i]))
                    self.pb.remove((*tolerations, i))
        if removed:
            self.done.append(f"{len(removed)} toleration(s) removed")
            self._drop_if_emptied(tolerations, "missing")

        rcn = profile.runtime_class_name
        if rcn and self._get((*SPEC, "runtimeClassName")) == rcn:
            self._unset("runtimeClassName", SPEC, "runtimeClassName")
            self.done.append("runtimeClassName removed")

    # -- summary --------------------------------------------------------------------------

    def summary(self, target: str) -> str:
        name = self.record["container"]["name"]
        profile = self.record.get("profile")
        head = f"to {target.upper()}" + (f" (profile {profile})" if profile else "")
        body = "; ".join(self.done) if self.done else "nothing to change"
        notes = "".join(f"; note: {n}" for n in self.notes)
        return f"{head}, container {name}: {body}{notes}"
