"""The JSON Patch that moves a Notebook between CPU and GPU, and the record to undo it.

Pure: a Notebook (as the API returns it) in, a `MovePlan` out. The notebook-controller
copies `spec.template.spec` into the StatefulSet, so patching it recreates pod
`<name>-0` with the new spec.

To GPU (`profile` required), on the notebook container and its pod spec:
  * `resources.limits[profile.resource] = str(profile.count)` (and the same request
    when the container already requests that resource: Kubernetes wants them equal);
  * image CPU -> CUDA by an exact match in the image map. An image in no pair is
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

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES, GpuProfile, ImagePair
from gpushift_core.patches import PatchConflict, apply
from gpushift_core.rollback_record import RollbackPlanner, holds_recorded_gpu, restorable
from gpushift_core.spec_editor import (
    MISSING,
    RECORD_VERSION,
    SECTIONS,
    SPEC,
    SpecEditor,
    cpu_image_for,
    cuda_image_for,
    same_toleration,
)

__all__ = [
    "MovePlan",
    "PlanError",
    "container_spec",
    "find_container",
    "image_refusal",
    "plan_move",
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
                  setting: str = "refuse") -> str | None:
    """Why a move to GPU of a notebook running `image` is refused under
    `unmapped_image: refuse`, or asked about under `ask` (None: the image has a CUDA
    pair, or is a CUDA image of one). An image that is not a string is left to the
    planner's own errors."""
    if not isinstance(image, str) or cuda_image_for(image, image_map) is not None \
            or cpu_image_for(image, image_map) is not None:
        return None
    if setting == "ask":
        return (f"the notebook's image {image} has no CUDA image in the admin's image_map, "
                "so on a GPU pod it would run without GPU libraries. Move anyway, keeping "
                "this image, or ask your admin to add a CUDA pair for it")
    return (f"the notebook's image {image} has no CUDA image in the admin's image_map, so "
            "on a GPU pod it would run without CUDA; the move was refused (admin setting "
            "unmapped_image: refuse). Ask your admin to add a CUDA pair for this image, or "
            "to set unmapped_image: ask or keep to move with the image kept")


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
            refusal = image_refusal(gpu.image, image_map, unmapped_image)
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
        cuda = cuda_image_for(image, self.image_map) if isinstance(image, str) else None
        if cuda is not None:
            if self._set("image", c, "image", cuda):
                self.done.append(f"image {image} -> {cuda}")
        elif isinstance(image, str) and cpu_image_for(image, self.image_map) is not None:
            self.notes.append(f"image {image} is already a CUDA image")
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
