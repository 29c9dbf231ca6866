"""What the webhook hands the sidecar as env, validated once at start (pure).

The webhook writes these variables (see `gpushift_webhook.injection`); a sidecar started
any other way must get the same. A missing or malformed variable is an `EnvError` that
names it: the CLI prints it and exits 2, rather than running half-configured.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_core.admin_settings import (
    AdminSettings,
    ConfigError,
    GpuFacts,
    parse_admin_settings,
)

DEFAULT_API_PORT = 8765
# Kubernetes object names (DNS-1123 subdomain). The notebook name also becomes part of
# a file name on the workspace volume, so it must not carry a path.
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class EnvError(ValueError):
    """A variable the sidecar needs is missing or malformed; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class SidecarEnv:
    pod_name: str
    """This pod (downward API), e.g. "my-notebook-0"."""
    pod_namespace: str
    """The notebook's namespace (downward API)."""
    pod_uid: str
    """This pod's UID: tells a migration's source pod from the pod that replaced it."""
    node_name: str
    """The node this pod runs on; empty when the downward API gave none."""
    notebook_name: str
    """The Notebook custom resource that owns this pod."""
    notebook_container: str
    """Name of the notebook container in this pod."""
    notebook_image: str
    """The notebook container's image when the webhook created this pod (empty: not
    given); a move to GPU of an image with no CUDA pair is refused on it at once."""
    notebook_resources: dict[str, Any]
    """The notebook container's `resources` when the webhook created this pod ({}: not
    given or not readable); a move to a profile whose CPU/memory would put a request
    above its limit is refused on it at once."""
    gpu: GpuFacts | None
    """The GPU resource and count of the notebook container's limits; None on CPU."""
    runtime_dir: Path
    """The emptyDir shared with the notebook container (runtime-config.json, api-token)."""
    workspace_dir: Path | None
    """Mount path of the workspace PVC (where checkpoints live); None when the pod has
    none, and then kernel state does not survive a move."""
    api_port: int
    """Loopback port of the API."""
    settings: AdminSettings
    """The admin's profiles, image map and idle bounds."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SidecarEnv:
        env = os.environ if environ is None else environ
        settings = parse_settings(_required(env, "GPUSHIFT_SETTINGS"))
        return cls(
            pod_name=_object_name(env, "GPUSHIFT_POD_NAME"),
            pod_namespace=_object_name(env, "GPUSHIFT_POD_NAMESPACE"),
            pod_uid=env.get("GPUSHIFT_POD_UID", "").strip(),
            node_name=env.get("GPUSHIFT_NODE_NAME", "").strip(),
            notebook_name=_object_name(env, "GPUSHIFT_NOTEBOOK_NAME"),
            notebook_container=env.get("GPUSHIFT_NOTEBOOK_CONTAINER", "").strip(),
            notebook_image=env.get("GPUSHIFT_NOTEBOOK_IMAGE", "").strip(),
            notebook_resources=_json_object(env.get("GPUSHIFT_NOTEBOOK_RESOURCES", "")),
            gpu=_gpu(env, settings),
            runtime_dir=_absolute("GPUSHIFT_RUNTIME_DIR", _required(env, "GPUSHIFT_RUNTIME_DIR")),
            workspace_dir=_workspace(env),
            api_port=api_port_from(env),
            settings=settings,
        )


def parse_settings(text: str) -> AdminSettings:
    """GPUSHIFT_SETTINGS: the admin's settings as the webhook wrote them."""
    try:
        return parse_admin_settings(text)
    except ConfigError as exc:
        raise EnvError("GPUSHIFT_SETTINGS", str(exc)) from None


def api_port_from(env: Mapping[str, str]) -> int:
    """GPUSHIFT_API_PORT, or the webhook's default port when it is not set."""
    text = env.get("GPUSHIFT_API_PORT", "").strip()
    if not text:
        return DEFAULT_API_PORT
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise EnvError("GPUSHIFT_API_PORT", f"{text!r} is not a TCP port")
    return int(text)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise EnvError(name, "not set (the gpushift webhook sets it on the sidecar)")
    return value


def _object_name(env: Mapping[str, str], name: str) -> str:
    value = _required(env, name)
    if not _OBJECT_NAME.match(value):
        raise EnvError(name, f"{value!r} is not a Kubernetes object name")
    return value


def _absolute(name: str, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts:
        raise EnvError(name, f"{value!r} is not an absolute path")
    return path


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object from the env, {} for anything else: the early refusals it feeds
    are a courtesy (the planner checks the Notebook itself), never a reason not to start."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _workspace(env: Mapping[str, str]) -> Path | None:
    # The webhook sets it empty when the notebook mounts no PVC at the workspace path.
    value = env.get("GPUSHIFT_WORKSPACE_DIR", "").strip()
    return _absolute("GPUSHIFT_WORKSPACE_DIR", value) if value else None


def _gpu(env: Mapping[str, str], settings: AdminSettings) -> GpuFacts | None:
    resource = env.get("GPUSHIFT_GPU_RESOURCE", "").strip()
    count_text = env.get("GPUSHIFT_GPU_COUNT", "").strip() or "0"
    if not count_text.isdigit():
        raise EnvError("GPUSHIFT_GPU_COUNT", f"{count_text!r} is not a whole number")
    count = int(count_text)
    if not resource:
        if count:
            raise EnvError("GPUSHIFT_GPU_RESOURCE",
                           f"empty while GPUSHIFT_GPU_COUNT is {count}")
        return None
    if resource not in settings.gpu_resources:
        raise EnvError("GPUSHIFT_GPU_RESOURCE",
                       f"{resource!r} is not one of gpu_resources "
                       f"({', '.join(settings.gpu_resources)})")
    if count == 0:
        raise EnvError("GPUSHIFT_GPU_COUNT", f"0 while GPUSHIFT_GPU_RESOURCE is {resource}")
    # A profile renamed or removed since the pod was admitted is not known: the first
    # profile with this GPU stands for it, as without the variable.
    profile = env.get("GPUSHIFT_GPU_PROFILE", "").strip()
    known = settings.profile(profile) if profile else None
    fits = known is not None and (known.resource, known.count) == (resource, count)
    return GpuFacts(resource, count, profile if fits else "")
