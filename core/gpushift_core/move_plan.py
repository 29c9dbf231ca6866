"""The JSON Patch that moves a Notebook between CPU and GPU, and the record to undo it.

Pure: a Notebook (as the API returns it) in, a `MovePlan` out. The notebook-controller
copies `spec.template.spec` into the StatefulSet, so patching it recreates pod
`<name>-0` with the new spec.

To GPU (`profile` required), on the notebook container and its pod spec:
  * the profile's CPU/memory (`resources`) on the container, refused (PlanError) when a
    request would end above its limit; its `affinity` in place of the pod's;
  * `resources.limits[profile.resource] = str(profile.count)` (and the same request
    when the container already requests that resource: Kubernetes wants them equal);
  * image CPU -> the pair's build of the profile's kind (CUDA, ROCm, Gaudi) by an
    exact match in the image map. An image in no pair is
    refused with `unmapped_image="refuse"` (PlanError with `image_refusal`'s message:
    a GPU pod running a CPU-only image wastes the GPU), or kept with "keep" (the summary
    says so);
  * `nodeSelector` gets the profile's entries, `tolerations` the profile's ones not
    already there, `runtimeClassName` the profile's (when it has one).
`previous_profile` records exactly what was there before each touched field: the value
or its absence, the parents (`resources`, `limits`, `nodeSelector`, `tolerations`) the
move created, and the tolerations it added.

From one GPU profile to another (`previous`: the record of the move that brought the
notebook to its GPU from CPU): the patch first puts the CPU original back from that
record, then applies the new profile to it, and the new record is that of a move from
the CPU original. So CPU -> A100 -> T4 -> CPU gives back the original spec exactly, and
on the T4 nothing of the A100 profile (its node selector, tolerations) stays behind.

To CPU: `rollback_record` plans it, from that record or without one. The field edits
of both directions and the record they keep are `spec_editor`'s.

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

from gpushift_core.admin_settings import (
    DEFAULT_GPU_RESOURCES,
    GpuProfile,
    ImagePair,
    image_kind_name,
)
from gpushift_core.patches import PatchConflict, apply
from gpushift_core.quantity import QuantityError, parse_quantity
from gpushift_core.rollback_record import RollbackPlanner, holds_recorded_gpu, restorable
from gpushift_core.spec_editor import (
    MISSING,
    RECORD_VERSION,
    SECTIONS,
    SPEC,
    SpecEditor,
    cpu_image_for,
    gpu_image_for,
    same_toleration,
)

__all__ = [
    "MovePlan",
    "PlanError",
    "container_spec",
    "find_container",
    "image_refusal",
    "plan_move",
    "resources_refusal",
    "unmapped_image_setting",
]



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


def container_spec(notebook: Mapping[str, Any], container: str | int | None = None,
                   ) -> tuple[int, Mapping[str, Any]]:
    """(index, spec) of the notebook container (`find_container`)."""
    index, _ = find_container(notebook, container)
    containers: list[Mapping[str, Any]] = _spec(notebook)["containers"]
    return index, containers[index]


def unmapped_image_setting(setting: str, keep_image: bool) -> str:
    """The admin's `unmapped_image` as it applies to one move: "ask" answered with the
    user's `keep_image` is "keep"; "refuse" stays "refuse" whatever the request says."""
    return "keep" if setting == "ask" and keep_image else setting


def image_refusal(image: object, image_map: Sequence[ImagePair],
                  setting: str = "refuse", kind: str = "cuda") -> str | None:
    """Why a move to GPU of a notebook running `image` is refused under
    `unmapped_image: refuse`, or asked about under `ask` (None: the image's pair has a
    build of `kind`, the target profile's `gpu_image_kind()`, or it is a GPU build of a
    pair that has one). An image that is not a string is left to the planner's own
    errors."""
    if not isinstance(image, str):
        return None
    # A GPU build of a pair counts as its CPU image: the pair must have this kind too.
    if gpu_image_for(cpu_image_for(image, image_map) or image, image_map, kind) is not None:
        return None
    name = image_kind_name(kind)
    if setting == "ask":
        return (f"the notebook's image {image} has no {name} image in the admin's "
                "image_map, so on a GPU pod it would run without GPU libraries. Move "
                f"anyway, keeping this image, or ask your admin to add a {name} build "
                "for it")
    return (f"the notebook's image {image} has no {name} image in the admin's image_map, "
            f"so on a GPU pod it would run without {name}; the move was refused (admin "
            f"setting unmapped_image: refuse). Ask your admin to add a {name} build for "
            "this image, or to set unmapped_image: ask or keep to move with the image kept")


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
    unmapped_image: str = "keep",
) -> MovePlan:
    """The patch that moves `notebook` to `target` ("gpu" or "cpu").

    `container`: the notebook container's name or index (default: container 0).
    `previous`: the `previous_profile` of the move to GPU: for "cpu", what to restore;
    for "gpu" on a notebook holding that move's GPU, the CPU original the new profile is
    planned from (a record this code does not understand is then ignored).
    `gpu_resources`, `profiles`: for "cpu" without a usable record, which limits count
    as GPUs and which profile's scheduling fields to take away.
    `unmapped_image`: "refuse" or "ask" raise PlanError (`image_refusal`) for a move to
    GPU that would change the Notebook while its image has no pair; "keep" keeps the
    image (the sidecar passes "keep" for an "ask" the user answered with keep_image).
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
    plan: SpecEditor
    ops: list[dict[str, Any]]
    try:
        if target == "gpu":
            if profile is None:
                raise PlanError("a move to GPU needs a profile")
            undo, original = _undo_earlier_move(notebook, index, name, image_map,
                                                previous=previous,
                                                gpu_resources=gpu_resources)
            gpu = _GpuPlanner(original, index, name, image_map)
            gpu.to_gpu(profile)
            ops = [*undo, *gpu.pb.operations]
            if undo and apply(notebook, ops) == notebook:
                ops = []  # already on this profile: undoing and redoing changes nothing
            refusal = image_refusal(gpu.image, image_map, unmapped_image,
                                    profile.gpu_image_kind())
            # A Notebook already as the move wants (no edit) is not refused: it is there.
            # "ask" refuses too: the caller passes "keep" once the user said so.
            if unmapped_image in ("refuse", "ask") and refusal and ops:
                raise PlanError(refusal)
            plan = gpu
        else:
            cpu = RollbackPlanner(notebook, index, name, image_map)
            cpu.to_cpu(profile, previous, gpu_resources, profiles)
            plan, ops = cpu, cpu.pb.operations
    except PatchConflict as exc:
        raise PlanError(f"the Notebook's spec has an unexpected shape: {exc}") from None
    if ops:
        ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": rv})
    return MovePlan(ops, plan.record, plan.summary(target))


def resources_refusal(resources: object, profile: GpuProfile) -> str | None:
    """Why the profile's CPU/memory cannot go onto a container whose `resources` are these
    (a request would end above its limit), None when they can. The sidecar asks it of a
    CPU pod's container before anything is checkpointed; the planner checks the same on
    the Notebook itself."""
    own = resources if isinstance(resources, Mapping) else {}
    merged: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        values = own.get(section)
        merged[section] = dict(values) if isinstance(values, Mapping) else {}
        merged[section].update(profile.resources.get(section, {}))
    return _over_limit(profile, merged["requests"], merged["limits"])


def _over_limit(profile: GpuProfile, requests: object, limits: object) -> str | None:
    """The refusal when a resource the profile sets has its request above its limit (a
    notebook's own values the profile does not touch are not the move's business)."""
    if not (isinstance(requests, Mapping) and isinstance(limits, Mapping)):
        return None
    touched = {name for values in profile.resources.values() for name in values}
    for name in sorted(set(requests) & set(limits) & touched):
        try:
            above = parse_quantity(requests[name]) > parse_quantity(limits[name])
        except QuantityError:
            continue  # not ours to judge: the API server says what it thinks
        if above:
            return (f"GPU profile {profile.name}: the container's {name} request "
                    f"({requests[name]}) would be above its limit ({limits[name]}); the "
                    "profile must set both, or the notebook's own limit must allow it")
    return None


def _undo_earlier_move(notebook: Mapping[str, Any], index: int, name: str,
                       image_map: Sequence[ImagePair], *, previous: Mapping[str, Any] | None,
                       gpu_resources: Sequence[str],
                       ) -> tuple[list[dict[str, Any]], Mapping[str, Any]]:
    """For a notebook on the GPU of an earlier move from CPU, whose record holds the CPU
    original: the operations that put that original back, and the notebook they give.
    Otherwise none, and the notebook as it is."""
    if (previous is None or previous.get("version") != RECORD_VERSION
            or previous.get("target") != "gpu" or not restorable(previous)
            or (previous.get("container") or {}).get("name") not in (None, "", name)
            or not holds_recorded_gpu(notebook, index, previous)):
        return [], notebook
    cpu = RollbackPlanner(notebook, index, name, image_map)
    cpu.restore(previous, gpu_resources)
    undo = cpu.pb.operations
    return undo, apply(notebook, undo)


def _spec(notebook: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = notebook
    for key in SPEC:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


class _GpuPlanner(SpecEditor):
    """The edits of a move to GPU: the profile's fields, each recorded for the move back."""

    image: object = None
    """The notebook container's image as found."""

    def to_gpu(self, profile: GpuProfile) -> None:
        c = self.container
        self.record.update(target="gpu", profile=profile.name, resource=profile.resource,
                           count=profile.count)
        image = self.image = self._get((*c, "image"))
        kind = profile.gpu_image_kind()
        # A GPU build (a notebook created on a GPU) is swapped for its pair's build of
        # this kind, so a CUDA image does not stay on an AMD pod.
        source = (cpu_image_for(image, self.image_map) or image) if isinstance(
            image, str) else None
        built = gpu_image_for(source, self.image_map, kind) if source else None
        if built is not None:
            if self._set("image", c, "image", built):
                self.done.append(f"image {image} -> {built}")
            else:
                self.notes.append(f"image {image} is already a GPU image")
        elif source != image:
            self.notes.append(f"image {image} is a GPU image whose pair has no "
                              f"{image_kind_name(kind)} build: kept")
        elif any(pair.cpu == image for pair in self.image_map):
            self.notes.append(f"image {image} has no {image_kind_name(kind)} build in the "
                              "image map: kept")
        else:
            self.notes.append(f"image {image} is not in the image map: kept")

        count = str(profile.count)
        for section in SECTIONS:
            parent = (*c, "resources", section)
            if section == "requests" and self._get((*parent, profile.resource)) is MISSING:
                continue  # only limits are needed; a request must equal the limit
            old = self._get((*parent, profile.resource))
            if old is not MISSING and str(old) == count:
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
            if any(same_toleration(x, t) for x in (*current, *added)):
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
        if profile.affinity and self._set("affinity", SPEC, "affinity",
                                          copy.deepcopy(profile.affinity)):
            self.done.append("affinity of the profile")
        self._set_compute(profile)

    def _set_compute(self, profile: GpuProfile) -> None:
        """The profile's CPU/memory on the container; refused when a request would end
        above its limit (the API would refuse the pod only after the patch)."""
        c = self.container
        for section, values in sorted(profile.resources.items()):
            parent = (*c, "resources", section)
            for name, value in sorted(values.items()):
                old = self._get((*parent, name))
                if old is not MISSING and str(old) == str(value):
                    continue
                self._note_parent("resources", (*c, "resources"))
                self._note_parent(section, parent)
                self._set(section, parent, name, str(value))
                self.done.append(f"{section} {name}={value}")
        refusal = _over_limit(profile, self._get((*c, "resources", "requests")),
                              self._get((*c, "resources", "limits")))
        if refusal is not None:
            raise PlanError(refusal)
