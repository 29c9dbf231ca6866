"""The webhook configuration: the one definition of the file the Helm chart mounts.

The same file carries the admin's GPU profiles, the CPU<->GPU image map and the idle
bounds, whose schema is `gpushift_core.admin_settings` (shared with the sidecar); the
webhook hands them to every injected sidecar (see `sidecar_settings`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from gpushift_core.admin_settings import (
    DEFAULT_GPU_RESOURCES,
    AdminSettings,
    CheckpointSettings,
    GpuProfile,
    IdleSettings,
    ImagePair,
    ServerTypeSettings,
    check_capacity_configmap,
    check_checkpoint_settings,
    check_gpu_settings,
    check_move_settings,
)
from gpushift_core.settings_loader import ConfigError, build

__all__ = ["ConfigError", "WebhookConfig", "load_config", "parse_config"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Secret's name: a DNS subdomain (dot-separated labels, at most 253 characters).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class ResourceSettings:
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "10m", "memory": "64Mi"})
    """Resource requests of the sidecar container."""
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "250m", "memory": "192Mi"})
    """Resource limits of the sidecar container."""


@dataclass(frozen=True)
class SidecarSettings:
    image: str = "gpushift/sidecar:0.1.0"
    """Image of the sidecar (built from Dockerfile.sidecar)."""
    image_pull_policy: str = "IfNotPresent"
    """Pull policy of the sidecar image: Always, IfNotPresent or Never."""
    name: str = "gpushift-sidecar"
    """Container name of the sidecar; also how an injected pod is recognised."""
    native: bool = True
    """Inject as a native sidecar (init container with restartPolicy Always, Kubernetes
    1.29+), so the notebook container starts only after the sidecar's startup probe
    passes. False injects a plain container, for older clusters."""
    port: int = 8765
    """Loopback port of the sidecar's API inside the pod."""
    run_as_user: int = 1000
    """UID of the sidecar when the notebook pod sets none. The sidecar runs as the
    notebook's user: `runAsUser` of the notebook container, else of the pod, else this
    (Kubeflow notebook images run as jovyan, 1000). Never 0: a notebook that runs as root
    gets a sidecar with this UID, and a warning."""
    run_as_group: int = 100
    """GID of the sidecar when the notebook pod sets none (`runAsGroup` of the notebook
    container, else of the pod, else this; Kubeflow's fsGroup for notebooks is 100,
    'users')."""
    image_pull_secrets: list[str] = field(default_factory=list)
    """Secrets (names, in the notebook's namespace) for pulling the sidecar image, added
    to the pod's imagePullSecrets unless already there. The sidecar image is pulled in
    every user namespace: from a private registry, each needs such a Secret."""
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    """Requests and limits of the sidecar container."""
    startup_period_seconds: int = 1
    """How often the startup probe asks the sidecar whether runtime-config.json exists."""
    startup_failure_threshold: int = 120
    """Failed startup probes before the kubelet restarts the sidecar."""


@dataclass(frozen=True)
class RuntimeVolumeSettings:
    name: str = "gpushift-runtime"
    """Name of the emptyDir volume shared by the sidecar and the notebook container."""
    mount_path: str = "/var/run/gpushift"
    """Where both containers see it (runtime-config.json and the API token live here)."""
    size_limit: str = "16Mi"
    """sizeLimit of the emptyDir; the files in it are a few kilobytes."""


@dataclass(frozen=True)
class WorkspaceSettings:
    mount_path: str = "/home/jovyan"
    """The volume the notebook container mounts here is the workspace (Kubeflow's
    workspace PVC is mounted at the home directory). The sidecar mounts the same
    volume at the same path, so notebook paths mean the same thing in both."""
    volume_name: str = ""
    """Name of the workspace volume, when it is not the one at mount_path."""


@dataclass(frozen=True)
class GuardSettings:
    ready_timeout_seconds: int = 300
    """A migrated pod not Ready after this long is rolled back to the previous profile."""
    sidecar_start_grace_seconds: int = 120
    """A notebook pod whose gpushift sidecar has not started after this long and waits
    in an image pull failure or a crash loop (so the notebook container cannot start
    either) is recreated without the sidecar: the optimizer is off for that notebook,
    with the reason, until it is stopped and started again (`stuck_sidecar`)."""


@dataclass(frozen=True)
class WebhookConfig:
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    """The injected sidecar container."""
    runtime_volume: RuntimeVolumeSettings = field(default_factory=RuntimeVolumeSettings)
    """The shared emptyDir for runtime files."""
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    """How the workspace (checkpoint) volume is found."""
    notebook_container: str = ""
    """Name of the notebook container; empty means container 0 (as in Kubeflow)."""
    gpu_resources: list[str] = field(default_factory=lambda: list(DEFAULT_GPU_RESOURCES))
    """Extended resources that count as a GPU when read from the notebook's limits."""
    excluded_namespaces: list[str] = field(default_factory=lambda: ["kube-system"])
    """Namespaces never injected, whatever their labels (the webhook's own is added)."""
    profiles: list[GpuProfile] = field(
        default_factory=lambda: [
            GpuProfile(
                name="nvidia-1",
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                              "effect": "NoSchedule"}],
            )
        ]
    )
    """GPU profiles a notebook can move to."""
    default_profile: str = "nvidia-1"
    """Profile used when a move to GPU names none."""
    image_map: list[ImagePair] = field(default_factory=list)
    """A CPU image and its GPU builds (cuda, rocm, gaudi; at least one); a move to GPU
    of an image not listed, or whose pair lacks the profile's kind, is refused or keeps
    the image (unmapped_image)."""
    unmapped_image: str = "ask"
    """A move to GPU whose image has no build of the profile's kind in image_map: "ask"
    (the user is asked whether to move anyway with the image kept), "refuse" (409 at
    once, naming the image) or "keep" (the CPU image stays without asking; GPU code
    fails on the GPU)."""
    server_types: ServerTypeSettings = field(default_factory=ServerTypeSettings)
    """Which Kubeflow server types (notebooks.kubeflow.org/server-type) get the sidecar:
    `inject` with the optimizer on, `inert` with it off; any other type not at all."""
    idle: IdleSettings = field(default_factory=IdleSettings)
    """Idle timer of GPU pods."""
    guard: GuardSettings = field(default_factory=GuardSettings)
    """Rollback of migrations whose pod does not become Ready."""
    capacity_configmap: str = ""
    """"<namespace>/<name>" of the ConfigMap where `serve --capacity` publishes what is
    free per GPU profile, handed to every sidecar; empty: not published. The chart sets
    it when `capacity.enabled` (leave it empty in your values)."""

    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Retention of the notebooks' kishu checkpoints (`keep` newest per notebook) and
    the room a checkpoint must leave on the notebook's volume (`min_free_mib`)."""

    def __post_init__(self) -> None:
        _validate(self)

    @cached_property
    def sidecar_settings_json(self) -> str:
        """`sidecar_settings()` as the compact JSON put into every sidecar's env."""
        return json.dumps(self.sidecar_settings(), sort_keys=True, separators=(",", ":"))

    def admin_settings(self) -> AdminSettings:
        """The part of this file both cluster components read."""
        return AdminSettings(profiles=list(self.profiles), default_profile=self.default_profile,
                             image_map=list(self.image_map), idle=self.idle,
                             server_types=self.server_types,
                             unmapped_image=self.unmapped_image,
                             gpu_resources=list(self.gpu_resources),
                             capacity_configmap=self.capacity_configmap,
                             checkpoints=self.checkpoints)

    def sidecar_settings(self) -> dict[str, Any]:
        """What the sidecar needs of this file, handed to it as JSON in its env."""
        return self.admin_settings().to_json()


def _validate(c: WebhookConfig) -> None:
    s = c.sidecar
    if not s.image:
        raise ConfigError("sidecar.image: must not be empty")
    if s.image_pull_policy not in _PULL_POLICIES:
        raise ConfigError(f"sidecar.image_pull_policy: one of {', '.join(_PULL_POLICIES)}")
    for what, name in (("sidecar.name", s.name), ("runtime_volume.name", c.runtime_volume.name)):
        if not _DNS_LABEL.match(name):
            raise ConfigError(f"{what}: {name!r} is not a valid DNS label")
    if not 1 <= s.port <= 65535:
        raise ConfigError(f"sidecar.port: {s.port} is not a TCP port")
    if s.run_as_user <= 0:
        raise ConfigError("sidecar.run_as_user: the sidecar never runs as root (UID 0)")
    if s.run_as_group < 0:
        raise ConfigError("sidecar.run_as_group: must not be negative")
    for i, secret in enumerate(s.image_pull_secrets):
        if len(secret) > 253 or not _DNS_SUBDOMAIN.match(secret):
            raise ConfigError(f"sidecar.image_pull_secrets[{i}]: {secret!r} is not a valid "
                              "Secret name")
    for what, path in (("runtime_volume.mount_path", c.runtime_volume.mount_path),
                       ("workspace.mount_path", c.workspace.mount_path)):
        if not path.startswith("/"):
            raise ConfigError(f"{what}: {path!r} is not an absolute path")
    check_gpu_settings(c.profiles, c.default_profile, c.gpu_resources, c.idle)
    check_move_settings(c.server_types, c.unmapped_image, c.image_map)
    check_capacity_configmap(c.capacity_configmap)
    check_checkpoint_settings(c.checkpoints)
    if c.guard.ready_timeout_seconds < 10:
        raise ConfigError("guard.ready_timeout_seconds: must be at least 10")
    if c.guard.sidecar_start_grace_seconds < 0:
        raise ConfigError("guard.sidecar_start_grace_seconds: must not be negative")


def parse_config(data: object) -> WebhookConfig:
    """Build the config from parsed YAML; an empty file means all defaults."""
    return build(WebhookConfig, {} if data is None else data)


def load_config(path: str | Path | None) -> WebhookConfig:
    """Read the YAML file the chart mounts (None: all defaults)."""
    if path is None:
        return WebhookConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data)
