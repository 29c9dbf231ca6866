"""The request bodies of `/api_extension`, checked (pure). Unknown keys are refused:
a misspelt `pending_cell` would otherwise move the notebook and drop the cell."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpushift_jupyter.errors import ApiError

_MAX_ID_CHARS = 256
TARGETS = ("gpu", "cpu")
REASONS = ("auto", "manual")


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return body


def known_keys(body: Mapping[str, Any], known: set[str], prefix: str = "") -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, "unknown_field",
                       f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                       f"expected {', '.join(sorted(prefix + k for k in known))}")


def text(body: Mapping[str, Any], key: str, *, required: bool = True,
         limit: int = _MAX_ID_CHARS) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ApiError(400, "invalid_field",
                       f"{key}: {'required, ' if required else ''}a non-empty string of "
                       f"at most {limit} characters")
    return value


def parse_flag(name: str, value: str) -> bool:
    """A query flag: 1/true/yes or 0/false/no (anything else is a 400, not a guess)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no", ""):
        return False
    raise ApiError(400, "invalid_field", f"{name}: 1 or 0, not {value[:40]!r}")


@dataclass(frozen=True)
class ClassifyRequest:
    """A `/classify` body, checked."""

    code: str
    """The cell's source."""
    kernel_id: str | None
    """Whose memory classifies it (None: a throwaway one)."""
    preview: bool
    """The verdict without the cell running (see KernelClassifier.preview)."""
    first_hit: bool
    """Answer at the first statement that needs a GPU (see KernelClassifier.classify)."""


def parse_classify(body: Mapping[str, Any]) -> ClassifyRequest:
    known_keys(body, {"code", "kernel_id", "preview", "first_hit"})
    code = body.get("code")
    if not isinstance(code, str):
        raise ApiError(400, "invalid_field", "code: required, the cell's source (a string)")
    preview, first_hit = _flag(body, "preview"), _flag(body, "first_hit")
    if preview and first_hit:
        raise ApiError(400, "invalid_field",
                       "first_hit: only for a cell about to run, not with preview")
    return ClassifyRequest(code, text(body, "kernel_id", required=False), preview, first_hit)


def _flag(body: Mapping[str, Any], name: str) -> bool:
    """An optional JSON boolean (false when absent)."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"{name}: true or false (a JSON boolean)")
    return value


def parse_kernel_and_path(body: Mapping[str, Any]) -> tuple[str, str | None]:
    known_keys(body, {"kernel_id", "path"})
    kernel_id = text(body, "kernel_id")
    assert kernel_id is not None
    return kernel_id, text(body, "path", required=False, limit=4096)


def parse_resume(body: Mapping[str, Any]) -> tuple[str, str | None, str]:
    known_keys(body, {"kernel_id", "path", "commit_id"})
    kernel_id, path = text(body, "kernel_id"), text(body, "path", required=False,
                                                     limit=4096)
    commit_id = text(body, "commit_id", limit=128)
    assert kernel_id is not None and commit_id is not None
    return kernel_id, path, commit_id


def parse_user_interval(body: Mapping[str, Any]) -> float | None:
    """`{"interval_seconds": n}`: 0 (off) to a day, or null (the default)."""
    known_keys(body, {"interval_seconds"})
    value = body.get("interval_seconds")
    if value is None:
        return None
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not 0 <= value <= 86400):
        raise ApiError(400, "invalid_field", "interval_seconds: a number of seconds from 0 "
                       "(off) to 86400, or null")
    return float(value)


def parse_kernel_id(value: str) -> str:
    """A kernel id from a query string (`?kernel_id=`)."""
    kernel_id = text({"kernel_id": value}, "kernel_id", limit=128)
    assert kernel_id is not None
    return kernel_id


def parse_activity(body: Mapping[str, Any]) -> tuple[str, bool]:
    known_keys(body, {"kernel_id", "gpu_cell_running"})
    kernel_id = text(body, "kernel_id")
    running = body.get("gpu_cell_running")
    if not isinstance(running, bool):
        raise ApiError(400, "invalid_field", "gpu_cell_running: required, true or false")
    assert kernel_id is not None
    return kernel_id, running


def parse_migrate(body: Mapping[str, Any]) -> dict[str, Any]:
    known_keys(body, {"target", "reason", "kernel_id", "path", "pending_cell", "profile",
                      "keep_image"})
    for key, allowed in (("target", TARGETS), ("reason", REASONS)):
        if body.get(key) not in allowed:
            raise ApiError(400, f"unknown_{key}",
                           f"{key}: {body.get(key)!r} is not one of {', '.join(allowed)}")
    kernel_id = text(body, "kernel_id", required=False)
    path = text(body, "path", required=False, limit=4096)
    profile = text(body, "profile", required=False)
    keep_image = _flag(body, "keep_image")
    cell = body.get("pending_cell")
    if cell is not None:
        if not isinstance(cell, dict):
            raise ApiError(400, "invalid_field", "pending_cell: an object or null")
        known_keys(cell, {"cell_id", "code"}, "pending_cell.")
        text(cell, "cell_id")
        if not isinstance(cell.get("code"), str):
            raise ApiError(400, "invalid_field", "pending_cell.code: required, a string")
        if kernel_id is None and path is None:
            raise ApiError(400, "invalid_field",
                           "pending_cell needs the notebook: send kernel_id or path")
    return {"target": body["target"], "reason": body["reason"], "kernel_id": kernel_id,
            "path": path, "pending_cell": cell, "profile": profile, "keep_image": keep_image}


def parse_idle_timeout(body: Mapping[str, Any]) -> dict[str, Any]:
    """Checked again by the sidecar (bounds); here only the shape."""
    known_keys(body, {"seconds"})
    seconds = body.get("seconds", ...)
    if seconds is ... or not (seconds is None or (isinstance(seconds, int)
                                                  and not isinstance(seconds, bool))):
        raise ApiError(400, "invalid_field", "seconds: required, whole seconds or null")
    return {"seconds": seconds}
