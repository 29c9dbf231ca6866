"""What gpushift adds to a notebook pod, decided from the pod and what the webhook knows
of its Notebook (pure).

`plan_injection(pod, namespace, config, server_type)` returns a `Decision`: the patch to
apply (or none), warnings for the user, and the outcome and reason for logs and metrics.

`server_type` is the Notebook's `notebooks.kubeflow.org/server-type`, which Kubeflow's
notebook-controller does not copy into the pod (its key contains "notebook"): the
caller looks it up in the webhook's cache of Notebooks (`server_types.ServerTypeCache`)
and hands it in, so admission never waits on the API. None (a cache miss, e.g. the first
pod of a Notebook created a moment ago) injects: the sidecar reads its Notebook and goes
inert when the type is not one to act on (`config.server_types`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from gpushift_core import labels
from gpushift_core.admin_settings import GpuFacts
from gpushift_core.patches import PatchBuilder, PatchConflict, dumps
from gpushift_core.pod_profile import profile_of_pod
from gpushift_core.version import __version__
from gpushift_webhook.config import WebhookConfig


class Outcome(StrEnum):
    INJECTED = "injected"
    SKIPPED = "skipped"
    ALREADY_INJECTED = "already_injected"
    UNHANDLED = "unhandled"  # allowed without a patch, with a warning
    ERROR = "error"  # a bug of ours: allowed without a patch, logged
    BAD_REQUEST = "bad_request"  # HTTP 400, never reached the decision


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    operations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notebook: str = ""
    # Which pod the review was about, for the log line: `review()` fills them in from the
    # validated request, so the adapter never reads the raw body itself.
    namespace: str = ""
    pod: str = ""

    def about(self, namespace: str, pod: str) -> Decision:
        """This decision, naming the pod it is about. Built directly, not with
        `dataclasses.replace` (which looks up the fields on every call): it runs once
        per review, on the admission hot path. A new field must be passed on here."""
        return Decision(self.outcome, self.reason, self.operations, self.warnings,
                        self.notebook, namespace, pod)


def _sorted_json(value: object) -> str:
    """`value` as compact JSON with sorted keys (the same pod, the same patch), through
    `patches.dumps`: orjson where it can (json's sort_keys encoder took 3.4 µs of a
    review's ~46 for a container's resources, orjson 0.3)."""
    return dumps(value, sort_keys=True).decode()


class Unhandled(Exception):
    """The pod has a shape we cannot inject into; it is admitted unchanged."""


def plan_injection(pod: Mapping[str, Any], namespace: str, config: WebhookConfig,
                   server_type: str | None = None) -> Decision:
    metadata = _mapping(pod.get("metadata"))
    pod_labels = _mapping(metadata.get("labels"))
    annotations = _mapping(metadata.get("annotations"))
    notebook = pod_labels.get(labels.NOTEBOOK_NAME_LABEL, "")
    if not isinstance(notebook, str):
        notebook = ""
    if namespace in config.excluded_namespaces:
        return Decision(Outcome.SKIPPED, f"namespace {namespace} is excluded", notebook=notebook)
    if not notebook:
        return Decision(Outcome.SKIPPED, f"no {labels.NOTEBOOK_NAME_LABEL} label")
    if str(annotations.get(labels.INJECT_ANNOTATION, "")).lower() == "false":
        return Decision(Outcome.SKIPPED, f"annotation {labels.INJECT_ANNOTATION}=false",
                        notebook=notebook)
    if labels.INJECTED_ANNOTATION in annotations:
        return Decision(Outcome.ALREADY_INJECTED, "pod already injected", notebook=notebook)
    off = _optimizer_off(pod)
    if off is not None:
        return Decision(Outcome.SKIPPED, f"the guard turned the optimizer off for this "
                        f"notebook ({labels.OPTIMIZER_OFF_ENV}): {off}", notebook=notebook)
    mode = config.server_types.mode(server_type)
    if mode == "skip":
        return Decision(Outcome.SKIPPED, f"server type {server_type!r} is in neither "
                        "server_types.inject nor server_types.inert", notebook=notebook)
    try:
        decision = _inject(pod, notebook, config)
        if mode == "inert" and decision.outcome is Outcome.INJECTED:
            decision = replace(decision, reason=f"sidecar injected inert (server type "
                                                f"{server_type!r})")
        return decision
    except (Unhandled, PatchConflict) as exc:
        return Decision(
            Outcome.UNHANDLED, str(exc), notebook=notebook,
            warnings=[f"gpushift: the GPU optimizer is off for this pod: {exc}"],
        )


def _inject(pod: Mapping[str, Any], notebook: str, config: WebhookConfig) -> Decision:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise Unhandled("the pod has no spec")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise Unhandled("the pod has no containers")
    if not all(isinstance(c, dict) for c in containers):
        raise Unhandled("a container is not an object")
    sidecar = config.sidecar
    present = [c.get("name") for c in containers + _list(spec.get("initContainers"))
               if isinstance(c, dict)]
    if sidecar.name in present:
        return Decision(Outcome.ALREADY_INJECTED, f"container {sidecar.name} already present",
                        notebook=notebook)
    index = _notebook_container_index(containers, config.notebook_container)
    notebook_container = containers[index]
    volume_names = {_name(v) for v in _list(spec.get("volumes"))}
    if config.runtime_volume.name in volume_names:
        raise Unhandled(f"a volume named {config.runtime_volume.name} already exists")

    warnings: list[str] = []
    identity = sidecar_identity(spec, notebook_container, sidecar.run_as_user,
                                sidecar.run_as_group)
    if identity.warning:
        warnings.append(identity.warning)
    gpu = gpu_facts(notebook_container, config.gpu_resources)
    if gpu is not None:  # which profile: two may hold the same GPU, on other nodes
        # All three fields, directly: dataclasses.replace is slow for the hot path.
        gpu = GpuFacts(gpu.resource, gpu.count, profile_of_pod(spec, gpu, config.profiles))
    workspace = _workspace_mount(spec, notebook_container, config)
    if workspace is None:
        warnings.append(
            f"gpushift: no persistent volume is mounted at {config.workspace.mount_path} in "
            f"container {notebook_container.get('name')!r}: kernel state will not survive a "
            "move between CPU and GPU"
        )

    runtime_mount = {"name": config.runtime_volume.name,
                     "mountPath": config.runtime_volume.mount_path}
    patch = PatchBuilder(pod)
    patch.append(("spec", "volumes"), {
        "name": config.runtime_volume.name,
        "emptyDir": {"sizeLimit": config.runtime_volume.size_limit},
    })
    container = _sidecar_container(notebook, notebook_container, gpu, workspace, runtime_mount,
                                   identity, config)
    if sidecar.native:
        patch.append(("spec", "initContainers"), container)
    else:
        patch.append(("spec", "containers"), container)
    patch.append(("spec", "containers", index, "volumeMounts"), runtime_mount)
    patch.append_all(("spec", "containers", index, "env"), [
        {"name": "GPUSHIFT_RUNTIME_DIR", "value": config.runtime_volume.mount_path},
        {"name": "GPUSHIFT_SIDECAR_URL", "value": f"http://127.0.0.1:{sidecar.port}"},
    ])
    # The sidecar image may live in a private registry: its pull secrets go beside the
    # pod's own (which the kubelet tries in turn), each once.
    have = {_name(s) for s in _list(spec.get("imagePullSecrets"))}
    for secret in sidecar.image_pull_secrets:
        if secret not in have:
            patch.append(("spec", "imagePullSecrets"), {"name": secret})
            have.add(secret)
    patch.set_key(("metadata", "annotations"), labels.INJECTED_ANNOTATION, __version__)
    return Decision(Outcome.INJECTED, "sidecar injected", patch.operations, warnings, notebook)


def _optimizer_off(pod: Mapping[str, Any]) -> str | None:
    """The reason in `OPTIMIZER_OFF_ENV` on a container of the pod: the guard put it on
    the Notebook when the sidecar could not start (`gpushift_webhook.stuck_sidecar`)."""
    for container in _list(_mapping(pod.get("spec")).get("containers")):
        for item in _list(_mapping(container).get("env")):
            if _mapping(item).get("name") == labels.OPTIMIZER_OFF_ENV:
                return str(_mapping(item).get("value") or "")
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    """Kubernetes validates the pod after us; until then any field may be malformed."""
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(item: object) -> str | None:
    """The `name` of a volume or mount when it is a string. Names go into sets: any other
    value matches nothing (a dict or a list there is unhashable and would raise)."""
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None


def _notebook_container_index(containers: list[Mapping[str, Any]], name: str) -> int:
    if not name:
        return 0
    for i, c in enumerate(containers):
        if c.get("name") == name:
            return i
    raise Unhandled(f"no container named {name!r} (the configured notebook container)")


@dataclass(frozen=True)
class Identity:
    """Who the sidecar runs as, and why not as the notebook's user when it cannot."""

    uid: int
    gid: int
    warning: str = ""


def sidecar_identity(spec: Mapping[str, Any], container: Mapping[str, Any],
                     default_uid: int, default_gid: int) -> Identity:
    """The sidecar runs as the notebook's user: runAsUser and runAsGroup each from the
    notebook container's securityContext, else the pod's (the kubelet's own precedence),
    else the config's defaults (1000:100, Kubeflow's jovyan/users).

    Same UID, because the sidecar writes its API token into the shared runtime emptyDir
    with mode 0600 (gpushift_sidecar.token) and the notebook's server extension must read
    it; a reused token is even refused unless the file belongs to the sidecar's own UID.
    The same UID needs no file mode change. The emptyDir itself needs no fsGroup: the
    kubelet makes it world-writable (0777; with the pod's fsGroup, group-owned by it and
    setgid), so the sidecar can write there as any UID, and runtime-config.json is
    0644. The webhook therefore never sets or changes the pod's fsGroup (a pod-level
    field that also changes the ownership of the notebook's volumes): the pod's own,
    Kubeflow's 100, applies to the sidecar as a supplementary group like to the notebook.
    A group-readable token (0640, group = fsGroup) would also serve differing UIDs, but
    would hand the token to every process of that group in both containers; it is not
    needed while the UIDs match.

    A pod that sets no UID runs as its image's user, which the webhook cannot see: the
    config's UID is assumed. Never root: a notebook that runs as UID 0 gets a sidecar
    with the config's UID, and a warning. A GID is taken as it is, 0 included: a group
    gives no privilege, and the sidecar's capabilities are all dropped. Values Kubernetes
    would refuse (not a whole number >= 0) count as unset; the API server rejects such a
    pod after us anyway.
    """
    pod_context = _mapping(spec.get("securityContext"))
    own_context = _mapping(container.get("securityContext"))

    def resolved(key: str) -> int | None:
        for context in (own_context, pod_context):
            value = context.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        return None

    uid, gid = resolved("runAsUser"), resolved("runAsGroup")
    gid = default_gid if gid is None else gid
    if uid is None:
        return Identity(default_uid, gid)
    if uid == 0:
        return Identity(default_uid, gid, (
            f"gpushift: the notebook container {container.get('name')!r} runs as root "
            f"(UID 0); the gpushift sidecar never does and runs as UID {default_uid} "
            "(sidecar.run_as_user) instead: the notebook can read the sidecar's API token "
            "only while it keeps root's capabilities, and the sidecar may be unable to "
            "write next to files the notebook creates. Run the notebook as a non-root user "
            "(runAsUser) to be sure the GPU optimizer works"))
    return Identity(uid, gid)


def gpu_facts(container: Mapping[str, Any], vendors: list[str]) -> GpuFacts | None:
    """The GPU resource and count in the container's limits (Kubeflow sets limits)."""
    limits = _mapping(_mapping(container.get("resources")).get("limits"))
    for key in vendors:
        if key in limits:
            try:
                count = int(str(limits[key]))
            except ValueError:
                raise Unhandled(f"limit {key}={limits[key]!r} is not a whole number") from None
            if count > 0:
                return GpuFacts(key, count)
    return None


def _workspace_mount(spec: Mapping[str, Any], container: Mapping[str, Any],
                     config: WebhookConfig) -> dict[str, Any] | None:
    """The notebook container's mount of the workspace PVC, or None when there is none."""
    claims = {name for v in _list(spec.get("volumes"))
              if (name := _name(v)) and isinstance(v.get("persistentVolumeClaim"), Mapping)}
    for mount in _list(container.get("volumeMounts")):
        if not isinstance(mount, dict) or _name(mount) not in claims:
            continue
        wanted = config.workspace.volume_name
        if (wanted and mount.get("name") == wanted) or (
            not wanted and str(mount.get("mountPath", "")).rstrip("/")
            == config.workspace.mount_path.rstrip("/")
        ):
            copied = {k: mount[k] for k in ("name", "mountPath", "subPath", "subPathExpr")
                      if k in mount}
            return copied
    return None


def _sidecar_container(  # noqa: PLR0917 - private, called once
    notebook: str,
    notebook_container: Mapping[str, Any],
    gpu: GpuFacts | None,
    workspace: dict[str, Any] | None,
    runtime_mount: dict[str, Any],
    identity: Identity,
    config: WebhookConfig,
) -> dict[str, Any]:
    s = config.sidecar
    mounts = [runtime_mount]
    if workspace is not None:
        mounts.append(workspace)
    # The ServiceAccount admission plug-in ran before us and mounted the token only into
    # the containers that existed then; the sidecar needs it to patch its Notebook.
    mounts += [dict(m) for m in _list(notebook_container.get("volumeMounts"))
               if isinstance(m, dict)
               and m.get("mountPath") == labels.SERVICE_ACCOUNT_MOUNT_PATH]
    env = [
        _field_env("GPUSHIFT_POD_NAME", "metadata.name"),
        _field_env("GPUSHIFT_POD_NAMESPACE", "metadata.namespace"),
        _field_env("GPUSHIFT_POD_UID", "metadata.uid"),
        _field_env("GPUSHIFT_NODE_NAME", "spec.nodeName"),
        {"name": "GPUSHIFT_NOTEBOOK_NAME", "value": notebook},
        {"name": "GPUSHIFT_NOTEBOOK_CONTAINER", "value": str(notebook_container.get("name", ""))},
        # A move to GPU of an image with no CUDA pair is refused on it before anything
        # is checkpointed (the admin's unmapped_image).
        {"name": "GPUSHIFT_NOTEBOOK_IMAGE", "value": str(notebook_container.get("image", ""))},
        # So is a GPU profile whose CPU/memory would put a request above its limit.
        {"name": "GPUSHIFT_NOTEBOOK_RESOURCES",
         "value": _sorted_json(notebook_container.get("resources") or {})},
        {"name": "GPUSHIFT_GPU_RESOURCE", "value": gpu.resource if gpu else ""},
        {"name": "GPUSHIFT_GPU_COUNT", "value": str(gpu.count if gpu else 0)},
        {"name": "GPUSHIFT_GPU_PROFILE", "value": gpu.profile if gpu else ""},
        {"name": "GPUSHIFT_RUNTIME_DIR", "value": config.runtime_volume.mount_path},
        {"name": "GPUSHIFT_WORKSPACE_DIR", "value": workspace["mountPath"] if workspace else ""},
        {"name": "GPUSHIFT_API_PORT", "value": str(s.port)},
        {"name": "GPUSHIFT_SETTINGS", "value": config.sidecar_settings_json},
        # The root filesystem is read-only; Python's temporary files go to the runtime volume.
        {"name": "TMPDIR", "value": config.runtime_volume.mount_path},
    ]
    container: dict[str, Any] = {
        "name": s.name,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "args": ["serve", "--port", str(s.port)],
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": dict(s.resources.requests), "limits": dict(s.resources.limits)},
        # Meets Pod Security "restricted" on its own (Pod Security admission validates
        # after the mutating webhooks, so the sidecar is checked too): non-root, no
        # privilege escalation, all capabilities dropped, RuntimeDefault seccomp, not
        # privileged; its volumes are an emptyDir and the notebook's own.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": identity.uid,
            "runAsGroup": identity.gid,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The API listens on loopback only, which the kubelet's httpGet probes cannot
        # reach; the probe runs inside the container instead. It passes only once
        # runtime-config.json has been written.
        # The probe keeps asking for 1 s of its 2 s timeout: it passes as soon as the
        # sidecar is ready (the notebook container starts then), where a single ask
        # made every move wait for the next probe period (up to 1 s more).
        "startupProbe": {
            "exec": {"command": ["gpushift-sidecar", "probe", "--port", str(s.port),
                                 "--timeout", "0.5", "--wait", "1"]},
            "periodSeconds": s.startup_period_seconds,
            "failureThreshold": s.startup_failure_threshold,
            "timeoutSeconds": 2,
        },
    }
    if s.native:
        container["restartPolicy"] = "Always"
    return container


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}
