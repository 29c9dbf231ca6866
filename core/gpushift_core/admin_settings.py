"""The admin's GPU settings: profiles, the CPU<->GPU image map, idle bounds (pure).

One schema for both cluster components. The webhook reads these fields from the file
the Helm chart mounts (`gpushift_webhook.config.WebhookConfig`, matched to the chart's
`values.schema.json`) and hands them to every injected sidecar as the JSON of
`AdminSettings.to_json()`; the sidecar reads that JSON back with `parse_admin_settings`.
Both validate with `check_gpu_settings`, so neither side accepts what the other refuses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpushift_core.labels import KUBEFLOW_SERVER_TYPE_ANNOTATION, annotations_of
from gpushift_core.quantity import QuantityError, parse_quantity
from gpushift_core.settings_loader import ConfigError, build

__all__ = [
    "DEFAULT_GPU_RESOURCES",
    "IMAGE_KINDS",
    "AdminSettings",
    "CheckpointSettings",
    "ConfigError",
    "GpuFacts",
    "GpuProfile",
    "IdleSettings",
    "ImagePair",
    "ServerTypeSettings",
    "check_capacity_configmap",
    "check_checkpoint_settings",
    "check_gpu_settings",
    "check_move_settings",
    "image_kind_name",
    "parse_admin_settings",
    "server_type_of",
]

# The GPU vendors Kubeflow's spawner offers, as extended resources on container 0.
DEFAULT_GPU_RESOURCES = ["nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi"]

# Kubeflow's spawner sets notebooks.kubeflow.org/server-type on the Notebook: "jupyter",
# "group-one" (VSCode) or "group-two" (RStudio). A Notebook without it (created by hand)
# is taken for Jupyter, the kind Kubeflow's own web app treats as the default.
DEFAULT_SERVER_TYPE = "jupyter"
# The GPU builds an image_map pair may name, and the one each vendor's pods run.
IMAGE_KINDS = ("cuda", "rocm", "gaudi")
_IMAGE_KIND_BY_VENDOR = {"nvidia.com": "cuda", "amd.com": "rocm", "habana.ai": "gaudi"}
_IMAGE_KIND_NAMES = {"cuda": "CUDA", "rocm": "ROCm", "gaudi": "Gaudi"}
_SECTIONS = ("requests", "limits")
_AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
_UNMAPPED_IMAGE = ("ask", "refuse", "keep")


@dataclass(frozen=True)
class GpuProfile:
    name: str
    """Name the users and the sidecar refer to, e.g. "nvidia-1"."""
    resource: str = "nvidia.com/gpu"
    """Extended resource requested as a limit on the notebook container."""
    count: int = 1
    """How many of that resource."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node selector added to the pod while it holds the GPU."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Tolerations added to the pod while it holds the GPU (Kubernetes' own shape)."""
    runtime_class_name: str = ""
    """runtimeClassName for GPU pods (e.g. "nvidia"), empty for none."""
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    """CPU, memory (any resource but a GPU) set on the notebook container while it holds
    the GPU, by section: {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {...}}.
    The move back puts the notebook's own values back."""
    affinity: dict[str, Any] = field(default_factory=dict)
    """The pod's affinity while it holds the GPU (Kubernetes' own shape: nodeAffinity,
    podAffinity, podAntiAffinity); it replaces the notebook's, which the move back puts
    back. Empty: the notebook's own affinity stays."""
    image_kind: str = ""
    """Which GPU image of an image_map pair the pod runs: "cuda", "rocm" or "gaudi".
    Empty: by the resource's vendor (nvidia.com -> cuda, amd.com -> rocm, habana.ai ->
    gaudi; cuda for any other)."""

    def gpu_image_kind(self) -> str:
        """`image_kind`, or the one the resource's vendor implies."""
        if self.image_kind:
            return self.image_kind
        vendor = self.resource.split("/", 1)[0]
        return _IMAGE_KIND_BY_VENDOR.get(vendor, "cuda")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resource": self.resource,
            "count": self.count,
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "runtime_class_name": self.runtime_class_name,
            # Only when set: a sidecar of a release before these fields reads a
            # profile that does not use them (an admin may pin an older sidecar image).
            **({"resources": {k: dict(v) for k, v in self.resources.items()}}
               if self.resources else {}),
            **({"affinity": dict(self.affinity)} if self.affinity else {}),
            **({"image_kind": self.image_kind} if self.image_kind else {}),
        }


@dataclass(frozen=True)
class ImagePair:
    """A CPU notebook image and its GPU builds, one per vendor's stack (at least one)."""

    cpu: str
    """A CPU notebook image, as written in the Notebook."""
    cuda: str = ""
    """The CUDA build that replaces it on an NVIDIA pod."""
    rocm: str = ""
    """The ROCm build that replaces it on an AMD pod."""
    gaudi: str = ""
    """The Gaudi (Habana SynapseAI) build that replaces it on a Gaudi pod."""

    def gpu_image(self, kind: str) -> str:
        """The build for an image kind ("cuda", "rocm", "gaudi"); "" when the pair has none."""
        return {"cuda": self.cuda, "rocm": self.rocm, "gaudi": self.gaudi}.get(kind, "")

    def gpu_images(self) -> list[str]:
        """Every GPU build the pair names."""
        return [image for image in (self.cuda, self.rocm, self.gaudi) if image]

    def to_json(self) -> dict[str, str]:
        return {"cpu": self.cpu, **{kind: self.gpu_image(kind) for kind in IMAGE_KINDS
                                    if self.gpu_image(kind)}}


@dataclass(frozen=True)
class IdleSettings:
    timeout_seconds: int = 180
    """Seconds without GPU work on a GPU pod before it moves back to CPU."""
    min_seconds: int = 60
    """Lowest per-notebook override (annotation gpushift.io/idle-timeout) allowed."""
    max_seconds: int = 3600
    """Highest per-notebook override allowed."""
    warning_seconds: int = 30
    """How long the "moving back to CPU" warning shows before the move."""
    allow_pin: bool = False
    """Whether a notebook may be pinned to its GPU (never moved back on idle)."""
    utilization_threshold_percent: int = 5
    """GPU utilisation (NVML) under which the GPU counts as idle."""
    when_not_saved: str = "move"
    """An idle move whose checkpoints could not hold every variable (open files,
    generators: kishu names them): "move" (moves, and says which were not saved) or
    "stay" (no idle move while any is unsaved; the idle state says why)."""


@dataclass(frozen=True)
class CheckpointSettings:
    """How much of the notebooks' volumes their kishu checkpoints may take (the notebook
    side applies them: it reads them from runtime-config.json)."""

    keep: int = 5
    """Checkpoints kept per notebook (the newest), besides those a move still needs; the
    others are deleted after each checkpoint, and their space given back."""
    min_free_mib: int = 256
    """A checkpoint is refused when it would leave less than this free (MiB) on the
    notebook's volume (its size estimated from the previous checkpoint's)."""
    background_interval_seconds: int = 60
    """Background checkpoints: at most one per kernel this often, after the user ran a
    cell and the kernel went idle (the kernel forks; the user never waits). 0: off."""
    background_max_state_mib: int = 4096
    """Kernels whose variables take more than this (MiB, estimated) get no background
    checkpoints (each hashes the whole state); JupyterLab says so."""


@dataclass(frozen=True)
class ServerTypeSettings:
    """Which Kubeflow server types (the Notebook's `notebooks.kubeflow.org/server-type`)
    get the sidecar, and how. gpushift sees a notebook only through its Jupyter server
    extension: on a VSCode or RStudio server it cannot tell GPU work from idleness, so
    those are left alone unless the admin asks for them, and then only inert."""

    inject: list[str] = field(default_factory=lambda: [DEFAULT_SERVER_TYPE])
    """Server types whose pods get the sidecar with the optimizer on. A Notebook without
    the annotation counts as "jupyter"."""
    inert: list[str] = field(default_factory=list)
    """Server types whose pods get the sidecar inert, e.g. ["group-one", "group-two"]
    (VSCode, RStudio): it writes runtime-config.json (optimizer off, with the reason) but
    never starts an idle move nor accepts a move. Server types in neither list are not
    injected."""

    def mode(self, server_type: str | None) -> Literal["on", "inert", "skip"]:
        """What a pod of this server type gets. "" (the Notebook has no annotation) is
        "jupyter"; None (not known yet) counts as on: the webhook injects and the
        sidecar, once it has read its Notebook, goes inert when it must."""
        if server_type is None:
            return "on"
        kind = server_type or DEFAULT_SERVER_TYPE
        if kind in self.inject:
            return "on"
        return "inert" if kind in self.inert else "skip"

    def inert_reason(self, server_type: str | None) -> str | None:
        """Why the optimizer is off for this server type (None: it is on)."""
        mode = self.mode(server_type)
        if mode == "on":
            return None
        listed = "in server_types.inert" if mode == "inert" else \
            "not in server_types.inject"
        return (f"the GPU optimizer is off for server type {server_type!r} ({listed}): "
                "gpushift sees GPU work only through its Jupyter server extension")


@dataclass(frozen=True)
class GpuFacts:
    """The GPU a pod holds, read from its notebook container's limits."""

    resource: str
    """The extended resource, e.g. "nvidia.com/gpu"."""
    count: int
    """How many (at least 1)."""
    profile: str = ""
    """The admin's profile the pod runs on, when its spec shows which (`pod_profile`);
    empty: the first profile with this resource and count stands for it."""


@dataclass(frozen=True)
class AdminSettings:
    """What both cluster components need of the admin's configuration."""

    profiles: list[GpuProfile] = field(default_factory=list)
    """GPU profiles a notebook can move to."""
    default_profile: str = ""
    """Profile used when a move to GPU names none."""
    image_map: list[ImagePair] = field(default_factory=list)
    """CPU image <-> CUDA image pairs."""
    idle: IdleSettings = field(default_factory=IdleSettings)
    """Idle timer of GPU pods."""
    gpu_resources: list[str] = field(default_factory=lambda: list(DEFAULT_GPU_RESOURCES))
    """Extended resources that count as a GPU."""
    server_types: ServerTypeSettings = field(default_factory=ServerTypeSettings)
    """Which Kubeflow server types get the sidecar, on or inert."""
    unmapped_image: str = "ask"
    """A move to GPU of a notebook whose image has no CUDA pair in image_map: "ask" (409
    at once, naming the image, unless the request says `keep_image`: JupyterLab asks
    the user whether to move anyway with the image kept), "refuse" (409 whatever the
    request says) or "keep" (moved with the CPU image kept, without asking, so CUDA
    code fails on the GPU pod; the move's notes say so)."""
    capacity_configmap: str = ""
    """Where the webhook publishes what is free per profile: "<namespace>/<name>" of a
    ConfigMap (key capacity.json, `gpushift_core.capacity_document`); empty: not
    published (the sidecar's GET /profiles then says the capacity is unknown)."""
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Retention of the notebooks' checkpoints and the room a checkpoint leaves."""

    def profile(self, name: str) -> GpuProfile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def matching_profile(self, gpu: GpuFacts | None) -> GpuProfile | None:
        """The active profile: the one the pod's spec shows (`GpuFacts.profile`), else
        the first profile with this pod's GPU resource and count."""
        if gpu is None:
            return None
        same = [p for p in self.profiles
                if p.resource == gpu.resource and p.count == gpu.count]
        return next((p for p in same if p.name == gpu.profile), None) or next(iter(same),
                                                                             None)

    def to_json(self) -> dict[str, Any]:
        """The JSON the webhook puts into every sidecar's env (GPUSHIFT_SETTINGS)."""
        return {
            "profiles": [p.to_json() for p in self.profiles],
            "default_profile": self.default_profile,
            "image_map": [p.to_json() for p in self.image_map],
            "idle": vars(self.idle).copy(),
            "gpu_resources": list(self.gpu_resources),
            "server_types": {"inject": list(self.server_types.inject),
                             "inert": list(self.server_types.inert)},
            "unmapped_image": self.unmapped_image,
            # Only when set, as for a profile's extras: a sidecar of an older release
            # reads settings without it.
            **({"capacity_configmap": self.capacity_configmap}
               if self.capacity_configmap else {}),
            **({"checkpoints": vars(self.checkpoints).copy()}
               if self.checkpoints != CheckpointSettings() else {}),
        }


def check_gpu_settings(profiles: Sequence[GpuProfile], default_profile: str,
                       gpu_resources: Sequence[str], idle: IdleSettings) -> None:
    """ConfigError naming the field when the profiles or idle bounds do not hold together."""
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError("profiles: profile names must be unique")
    for p in profiles:
        if p.resource not in gpu_resources:
            raise ConfigError(f"profiles.{p.name}.resource: {p.resource!r} is not in gpu_resources")
        if p.count < 1:
            raise ConfigError(f"profiles.{p.name}.count: must be at least 1")
        _check_profile_extras(p, gpu_resources)
    if profiles and default_profile not in names:
        raise ConfigError(f"default_profile: {default_profile!r} is not a profile")
    if not 0 < idle.min_seconds <= idle.timeout_seconds <= idle.max_seconds:
        raise ConfigError("idle: need 0 < min_seconds <= timeout_seconds <= max_seconds")
    if idle.warning_seconds < 0 or idle.warning_seconds >= idle.min_seconds:
        raise ConfigError("idle.warning_seconds: must be >= 0 and below min_seconds")
    if idle.when_not_saved not in ("move", "stay"):
        raise ConfigError(f"idle.when_not_saved: {idle.when_not_saved!r} is not one of "
                          "move, stay")


def _check_profile_extras(p: GpuProfile, gpu_resources: Sequence[str]) -> None:
    """The profile's resources, affinity and image kind (see `GpuProfile`)."""
    where = f"profiles.{p.name}"
    if p.image_kind and p.image_kind not in IMAGE_KINDS:
        raise ConfigError(f"{where}.image_kind: {p.image_kind!r} is not one of "
                          f"{', '.join(IMAGE_KINDS)}")
    for section, values in p.resources.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{where}.resources: {section!r} is not requests or limits")
        for name, value in values.items():
            if name in gpu_resources or name == p.resource:
                raise ConfigError(f"{where}.resources.{section}.{name}: the GPU is the "
                                  "profile's resource and count, not a resource entry")
            try:
                parse_quantity(value)
            except QuantityError as exc:
                raise ConfigError(f"{where}.resources.{section}.{name}: {exc}") from None
    requests, limits = p.resources.get("requests", {}), p.resources.get("limits", {})
    for name in sorted(set(requests) & set(limits)):
        if parse_quantity(requests[name]) > parse_quantity(limits[name]):
            raise ConfigError(f"{where}.resources: the request of {name} "
                              f"({requests[name]}) is above its limit ({limits[name]})")
    unknown = sorted(set(p.affinity) - set(_AFFINITY_KEYS))
    if unknown:
        raise ConfigError(f"{where}.affinity: unknown key(s) {', '.join(unknown)} (a "
                          f"Kubernetes affinity has {', '.join(_AFFINITY_KEYS)})")


def image_kind_name(kind: str) -> str:
    """How a user reads an image kind: "CUDA", "ROCm", "Gaudi"."""
    return _IMAGE_KIND_NAMES.get(kind, kind)


def server_type_of(notebook: Mapping[str, Any]) -> str:
    """The Notebook's server type annotation ("" when it has none)."""
    value = annotations_of(notebook).get(KUBEFLOW_SERVER_TYPE_ANNOTATION)
    return value.strip() if isinstance(value, str) else ""


def check_move_settings(server_types: ServerTypeSettings, unmapped_image: str,
                        image_map: Sequence[ImagePair] = ()) -> None:
    """ConfigError naming the field when the server types, unmapped_image or the image
    map are wrong."""
    for i, pair in enumerate(image_map):
        if not pair.cpu:
            raise ConfigError(f"image_map[{i}].cpu: must not be empty")
        if not pair.gpu_images():
            raise ConfigError(f"image_map[{i}]: {pair.cpu} names no GPU image (one of "
                              f"{', '.join(IMAGE_KINDS)})")
    for key, kinds in (("inject", server_types.inject), ("inert", server_types.inert)):
        if any(not kind.strip() for kind in kinds):
            raise ConfigError(f"server_types.{key}: a server type must not be empty")
    both = sorted(set(server_types.inject) & set(server_types.inert))
    if both:
        raise ConfigError(f"server_types: {', '.join(both)} both in inject and inert")
    if unmapped_image not in _UNMAPPED_IMAGE:
        raise ConfigError(f"unmapped_image: {unmapped_image!r} is not one of "
                          f"{', '.join(_UNMAPPED_IMAGE)}")


def parse_admin_settings(text: str) -> AdminSettings:
    """`AdminSettings` from its JSON; ConfigError naming the field when it is not."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"not JSON: {exc}") from None
    settings = build(AdminSettings, data)
    check_gpu_settings(settings.profiles, settings.default_profile, settings.gpu_resources,
                       settings.idle)
    check_move_settings(settings.server_types, settings.unmapped_image, settings.image_map)
    check_capacity_configmap(settings.capacity_configmap)
    check_checkpoint_settings(settings.checkpoints)
    return settings


def check_checkpoint_settings(checkpoints: CheckpointSettings) -> None:
    """ConfigError naming the field when the checkpoint settings are out of bounds."""
    if not 1 <= checkpoints.keep <= 1000:
        raise ConfigError("checkpoints.keep: must be between 1 and 1000")
    if checkpoints.min_free_mib < 0:
        raise ConfigError("checkpoints.min_free_mib: must not be negative")
    if not 0 <= checkpoints.background_interval_seconds <= 86400:
        raise ConfigError("checkpoints.background_interval_seconds: must be between 0 "
                          "(off) and 86400")
    if checkpoints.background_max_state_mib < 0:
        raise ConfigError("checkpoints.background_max_state_mib: must not be negative")


def check_capacity_configmap(ref: str) -> None:
    """ConfigError unless `ref` is empty or "<namespace>/<name>"."""
    namespace, sep, name = ref.partition("/")
    if ref and (not sep or not namespace or not name or "/" in name):
        raise ConfigError(f"capacity_configmap: {ref!r} is not <namespace>/<name>")
