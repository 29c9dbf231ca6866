"""The API's request bodies, checked (pure): what the server extension may ask for.

Unknown keys are refused rather than ignored: a misspelt `pending_cell` would otherwise
move the notebook and silently drop the cell that asked for the move.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpushift_core.move_plan import (
    image_refusal,
    resources_refusal,
    unmapped_image_setting,
)
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.state import CheckpointRef, PendingCell, Reason, Target

# Ids and paths are short; a cell's code is bounded by the body limit alone.
_MAX_ID_CHARS = 256
_MAX_PATH_CHARS = 4096
_E = TypeVar("_E", Target, Reason)


class ApiError(Exception):
    """An answer other than success: HTTP status, error code and a sentence for people."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.extra = extra


@dataclass(frozen=True)
class MigrationRequest:
    target: Target
    reason: Reason
    profile: str | None
    """The GPU profile to move to (the default one when the request names none);
    None for a move to CPU."""
    checkpoint: CheckpointRef | None
    pending_cell: PendingCell | None
    keep_image: bool = False
    """Move to GPU with an image that has no CUDA pair, keeping it: the user's answer
    when the admin's `unmapped_image` is "ask"."""
    other_checkpoints: tuple[CheckpointRef, ...] = ()
    """The checkpoints of the pod's other notebooks, one per notebook."""
    checkpoints_to_come: bool = False
    """The server extension names the checkpoints later (`NamedCheckpoints`)."""


@dataclass(frozen=True)
class NamedCheckpoints:
    """`POST /migrations/current/checkpoints`: the server extension saved the notebooks
    of a move that waits for them — or could not (`error`: the move fails, nothing was
    changed)."""

    migration_id: str
    checkpoint: CheckpointRef | None
    other_checkpoints: tuple[CheckpointRef, ...]
    error: str | None


@dataclass(frozen=True)
class ActivityReport:
    kernel_id: str
    gpu_cell_running: bool
    """A cell that uses the GPU is running in this kernel right now."""
    gpu_cell_finished_at: float | None
    """Epoch seconds at which the kernel's last GPU cell finished, if one did."""
    received_at: float = field(compare=False)
    """Epoch seconds at which the sidecar got the report."""
    gpu_utilization_percent: float | None = None
    """GPU utilisation (0-100, max over the GPUs) the server extension measured in the
    notebook container with NVML, which has the GPU devices (the sidecar usually has
    none); None: not measured."""
    busy_kernels: frozenset[str] | None = None
    """The server extension's view of every kernel (with `gpu_cells_running`): the
    kernels executing now, by their own execution state. None: not such a view (a
    tab's report of one cell)."""
    gpu_cells_running: frozenset[str] | None = None
    """The kernels running a GPU cell now, in that view."""


# At most this many kernel ids in one view of the pod's kernels.
_MAX_KERNEL_IDS = 256
# At most this many notebooks' checkpoints in one move (a pod's open notebooks).
_MAX_CHECKPOINTS = 64
# A reported failure is cut to this many characters (it goes into Events and the record).
_MAX_ERROR_CHARS = 2000


def parse_migration_request(body: Mapping[str, Any], env: SidecarEnv) -> MigrationRequest:
    _known_keys(body, {"target", "reason", "checkpoint", "other_checkpoints",
                       "checkpoints_to_come", "pending_cell", "profile", "keep_image"}, "")
    target = _choice(body, "target", Target)
    reason = _choice(body, "reason", Reason)
    settings = env.settings
    named = body.get("profile")
    if named is not None and not isinstance(named, str):
        raise _invalid("profile", "must be a profile name (a string)")
    if named is not None and settings.profile(named) is None:
        known = ", ".join(p.name for p in settings.profiles) or "none configured"
        raise ApiError(400, "unknown_profile",
                       f"profile {named!r} is not one of the admin's profiles ({known})")
    profile = None
    if target is Target.GPU:
        profile = named or settings.default_profile or None
        if profile is None:
            raise ApiError(400, "unknown_profile", "the admin configured no GPU profiles")
    keep_image = body.get("keep_image", False)
    if not isinstance(keep_image, bool):
        raise _invalid("keep_image", "must be true or false")
    _refuse_no_move(env, target, profile)
    if target is Target.GPU:
        _refuse_unmapped_image(env, profile, keep_image)
        _refuse_over_limit(env, profile)
    primary, others = _named(body, env)
    to_come = body.get("checkpoints_to_come", False)
    if not isinstance(to_come, bool):
        raise _invalid("checkpoints_to_come", "must be true or false")
    if to_come and (primary is not None or others):
        raise _invalid("checkpoints_to_come", "the checkpoints come later: name none now")
    if (primary is not None or others or to_come) and env.workspace_dir is None:
        raise ApiError(400, "no_workspace", "this pod has no workspace volume: a checkpoint "
                       "would not survive the move (send checkpoint null to move anyway)")
    cell = _object(body, "pending_cell", {"notebook_path", "cell_id", "code"})
    return MigrationRequest(
        target=target, reason=reason, profile=profile, checkpoint=primary,
        other_checkpoints=others, checkpoints_to_come=to_come,
        pending_cell=None if cell is None else PendingCell(
            notebook_path=_notebook_path(cell, "pending_cell", env),
            cell_id=_text(cell, "cell_id", "pending_cell."),
            code=_code(cell)),
        keep_image=keep_image,
    )


def parse_named_checkpoints(body: Mapping[str, Any], env: SidecarEnv) -> NamedCheckpoints:
    _known_keys(body, {"migration_id", "checkpoint", "other_checkpoints", "error"}, "")
    migration_id = _text(body, "migration_id", "")
    error = body.get("error")
    if error is not None and (not isinstance(error, str) or not error.strip()):
        raise _invalid("error", "a non-empty string or null")
    primary, others = _named(body, env)
    if error is not None and (primary is not None or others):
        raise _invalid("error", "a failure names no checkpoints")
    if error is not None and len(error) > _MAX_ERROR_CHARS:
        error = error[:_MAX_ERROR_CHARS] + "…"
    return NamedCheckpoints(migration_id, primary, others, error)


def _named(body: Mapping[str, Any], env: SidecarEnv
           ) -> tuple[CheckpointRef | None, tuple[CheckpointRef, ...]]:
    """`checkpoint` and `other_checkpoints` of a request."""
    checkpoint = _object(body, "checkpoint", {"notebook_path", "commit_id"})
    primary = None if checkpoint is None else _checkpoint_ref(checkpoint, "checkpoint", env)
    return primary, _other_checkpoints(body, env, primary)


def _checkpoint_ref(data: Mapping[str, Any], prefix: str, env: SidecarEnv) -> CheckpointRef:
    return CheckpointRef(notebook_path=_notebook_path(data, prefix, env),
                         commit_id=_text(data, "commit_id", f"{prefix}."))


def _other_checkpoints(body: Mapping[str, Any], env: SidecarEnv,
                       primary: CheckpointRef | None) -> tuple[CheckpointRef, ...]:
    """`other_checkpoints`: one checkpoint per other notebook of the pod (none of them
    the primary's notebook: two commits of one notebook would restore twice)."""
    value = body.get("other_checkpoints")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_CHECKPOINTS:
        raise _invalid("other_checkpoints", f"must be a list of at most {_MAX_CHECKPOINTS} "
                       "checkpoints")
    refs: list[CheckpointRef] = []
    seen = {primary.notebook_path} if primary is not None else set()
    for index, item in enumerate(value):
        where = f"other_checkpoints[{index}]"
        if not isinstance(item, dict):
            raise _invalid(where, "must be an object")
        _known_keys(item, {"notebook_path", "commit_id"}, f"{where}.")
        ref = _checkpoint_ref(item, where, env)
        if ref.notebook_path in seen:
            raise _invalid(where, f"{ref.notebook_path} has a checkpoint in this move already")
        seen.add(ref.notebook_path)
        refs.append(ref)
    return tuple(refs)


def _refuse_no_move(env: SidecarEnv, target: Target, profile: str | None) -> None:
    """409 for a move to where the notebook already is. A GPU pod may move to another
    GPU profile: that is a real move (other GPUs, maybe other nodes)."""
    if target is Target.CPU and env.gpu is None:
        raise ApiError(409, "already_on_target", "this pod already runs on CPU")
    active = env.settings.matching_profile(env.gpu)
    if target is Target.GPU and active is not None and active.name == profile:
        raise ApiError(409, "already_on_target",
                       f"this pod already runs on GPU profile {profile!r}")


def _refuse_unmapped_image(env: SidecarEnv, profile: str | None, keep_image: bool) -> None:
    """409 `image_unmapped` at once, before any patch, for a move to GPU whose image has
    no build of the profile's kind (CUDA, ROCm, Gaudi) in the image map: always under
    `unmapped_image: refuse`; under "ask" unless the request says `keep_image`
    (`keep_allowed` tells the front end it may ask the user). The image is the notebook
    container's as the webhook saw it when it created this pod (the pod is made from the
    Notebook's spec, so they agree); the runner plans again against the Notebook itself
    and fails the same way should it differ."""
    setting = unmapped_image_setting(env.settings.unmapped_image, keep_image)
    if setting == "keep" or not env.notebook_image:
        return
    target = env.settings.profile(profile or "")
    kind = target.gpu_image_kind() if target is not None else "cuda"
    refusal = image_refusal(env.notebook_image, env.settings.image_map, setting, kind)
    if refusal is not None:
        raise ApiError(409, "image_unmapped", refusal, image=env.notebook_image,
                       profile=profile, setting="unmapped_image",
                       keep_allowed=setting == "ask")


def _refuse_over_limit(env: SidecarEnv, profile: str | None) -> None:
    """409 `profile_over_limit` at once for a move from CPU to a profile whose CPU/memory
    would put a request above its limit, on the container as the webhook saw it. From a
    GPU pod the move starts from the CPU original, which only the Notebook's record
    holds: the runner's plan refuses it there (before any patch)."""
    target = env.settings.profile(profile or "")
    if target is None or env.gpu is not None or not target.resources:
        return
    refusal = resources_refusal(env.notebook_resources, target)
    if refusal is not None:
        raise ApiError(409, "profile_over_limit", refusal, profile=profile)


@dataclass(frozen=True)
class RestoreReport:
    """`POST /migrations/current/restore`: how restoring the state on the new pod went."""

    ok: bool
    """The state is back (done); false: the migration failed, the checkpoint stays on
    the volume and nothing was deleted."""
    restored: tuple[str, ...]
    """Names of the variables that came back."""
    not_restored: tuple[tuple[str, str], ...]
    """(name, reason) of each variable that did not."""
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "restored": list(self.restored),
                "not_restored": [{"name": n, "reason": r} for n, r in self.not_restored],
                "detail": self.detail}


def parse_restore_report(body: Mapping[str, Any]) -> RestoreReport:
    _known_keys(body, {"ok", "restored", "not_restored", "detail"}, "")
    ok = body.get("ok")
    if not isinstance(ok, bool):
        raise _invalid("ok", "required, true or false")
    restored = body.get("restored", [])
    if not isinstance(restored, list) or not all(isinstance(n, str) for n in restored):
        raise _invalid("restored", "a list of variable names (strings)")
    missing = body.get("not_restored", [])
    if not isinstance(missing, list):
        raise _invalid("not_restored", 'a list of {"name", "reason"} objects')
    not_restored = []
    for i, item in enumerate(missing):
        if not isinstance(item, dict):
            raise _invalid(f"not_restored[{i}]", 'must be a {"name", "reason"} object')
        _known_keys(item, {"name", "reason"}, f"not_restored[{i}].")
        name, reason = item.get("name"), item.get("reason")
        if not isinstance(name, str) or not name or not isinstance(reason, str):
            raise _invalid(f"not_restored[{i}]", "name (non-empty) and reason are strings")
        not_restored.append((name, reason))
    detail = body.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise _invalid("detail", "a string or null")
    return RestoreReport(ok=ok, restored=tuple(restored), not_restored=tuple(not_restored),
                         detail=detail or None)


def parse_activity(body: Mapping[str, Any], received_at: float) -> ActivityReport:
    _known_keys(body, {"gpu_cell_running", "gpu_cell_finished_at", "kernel_id",
                       "gpu_utilization_percent", "busy_kernels", "gpu_cells_running"}, "")
    running = body.get("gpu_cell_running")
    if not isinstance(running, bool):
        raise _invalid("gpu_cell_running", "required, true or false")
    finished = body.get("gpu_cell_finished_at")
    if finished is not None and (isinstance(finished, bool)
                                 or not isinstance(finished, int | float) or finished < 0):
        raise _invalid("gpu_cell_finished_at", "epoch seconds (a number) or null")
    percent = body.get("gpu_utilization_percent")
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int | float)
                                or not 0 <= percent <= 100):
        raise _invalid("gpu_utilization_percent", "a number from 0 to 100, or null")
    busy, gpu = _kernel_ids(body, "busy_kernels"), _kernel_ids(body, "gpu_cells_running")
    if (busy is None) != (gpu is None):
        raise _invalid("busy_kernels", "busy_kernels and gpu_cells_running come together "
                       "(the server extension's view of every kernel)")
    return ActivityReport(kernel_id=_text(body, "kernel_id", ""), gpu_cell_running=running,
                          gpu_cell_finished_at=None if finished is None else float(finished),
                          received_at=received_at,
                          gpu_utilization_percent=None if percent is None else float(percent),
                          busy_kernels=busy, gpu_cells_running=gpu)


def _kernel_ids(body: Mapping[str, Any], key: str) -> frozenset[str] | None:
    """A list of kernel ids, or None when absent."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > _MAX_KERNEL_IDS:
        raise _invalid(key, f"a list of at most {_MAX_KERNEL_IDS} kernel ids")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > _MAX_ID_CHARS:
            raise _invalid(key, f"kernel ids are non-empty strings of at most "
                                f"{_MAX_ID_CHARS} characters")
    return frozenset(value)


# A week: longer is not an idle timeout but a typo; the admin's bounds clamp it anyway.
_MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


def parse_idle_timeout(body: Mapping[str, Any]) -> int | None:
    """`PUT /idle/timeout`: `{"seconds": N}` (the user's timeout) or `{"seconds": null}`
    (back to the annotation or the admin's default)."""
    _known_keys(body, {"seconds"}, "")
    if "seconds" not in body:
        raise _invalid("seconds", "required, whole seconds or null")
    seconds = body["seconds"]
    if seconds is None:
        return None
    if (isinstance(seconds, bool) or not isinstance(seconds, int)
            or not 0 < seconds <= _MAX_TIMEOUT_SECONDS):
        raise _invalid("seconds", f"whole seconds from 1 to {_MAX_TIMEOUT_SECONDS}, or null")
    return seconds


def parse_notebook_registration(body: Mapping[str, Any], env: SidecarEnv) -> str:
    """`POST /notebooks`: the absolute path of a notebook kishu is attached to, under
    the workspace (its checkpoints live beside it, on the volume that moves)."""
    _known_keys(body, {"path"}, "")
    if env.workspace_dir is None:
        raise ApiError(400, "no_workspace", "this pod has no workspace volume: its kishu "
                       "checkpoints would not survive a move")
    return _notebook_path(body, "", env, key="path")


def _invalid(where: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{where}: {problem}")


def _known_keys(data: Mapping[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ApiError(400, "unknown_field",
                       f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                       f"expected {', '.join(sorted(prefix + k for k in known))}")


def _choice(body: Mapping[str, Any], key: str, kind: type[_E]) -> _E:
    value = body.get(key)
    allowed = [e.value for e in kind]
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(400, f"unknown_{key}",
                       f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return kind(value)


def _object(body: Mapping[str, Any], key: str, fields: set[str]) -> Mapping[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(key, "must be an object or null")
    _known_keys(value, fields, f"{key}.")
    return value


def _text(data: Mapping[str, Any], key: str, prefix: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(prefix + key, "required, a non-empty string")
    if len(value) > _MAX_ID_CHARS:
        raise _invalid(prefix + key, f"longer than {_MAX_ID_CHARS} characters")
    return value


def _code(cell: Mapping[str, Any]) -> str:
    code = cell.get("code")
    if not isinstance(code, str):
        raise _invalid("pending_cell.code", "required, a string")
    return code


def _notebook_path(data: Mapping[str, Any], prefix: str, env: SidecarEnv,
                   key: str = "notebook_path") -> str:
    """An absolute notebook path under the workspace: the sidecar shares only that
    volume with the notebook, so a path elsewhere means nothing on the new pod."""
    where = f"{prefix}.{key}" if prefix else key
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > _MAX_PATH_CHARS:
        raise _invalid(where, "required, an absolute path")
    if "\x00" in value or not value.startswith("/"):
        raise _invalid(where, f"{value!r} is not an absolute path")
    path = posixpath.normpath(value)
    workspace = str(env.workspace_dir) if env.workspace_dir is not None else None
    if workspace is not None and not path.startswith(workspace.rstrip("/") + "/"):
        raise _invalid(where, f"{value!r} is not under the workspace {workspace}")
    return path
