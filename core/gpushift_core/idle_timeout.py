"""The idle timeout of one notebook and its pin, from its annotations and the admin's
settings (pure). The sidecar's idle timer applies them (`gpushift_sidecar.idle`, whose
docstring tells the whole story); the webhook's `gpushift-report --from-cluster` shows
them. One definition, so the report says what the timer does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gpushift_core.admin_settings import IdleSettings
from gpushift_core.labels import PREFIX

__all__ = [
    "IDLE_TIMEOUT_ANNOTATION", "IDLE_TIMEOUT_ANNOTATIONS", "NOTEBOOK_IDLE_TIMEOUT_ANNOTATION",
    "NOTEBOOK_PIN_ANNOTATION", "PIN_ANNOTATION", "PIN_ANNOTATIONS", "Timeout",
    "parse_duration", "pin_requested", "resolve_timeout", "timeout_annotation",
]

IDLE_TIMEOUT_ANNOTATION = f"{PREFIX}/idle-timeout"
PIN_ANNOTATION = f"{PREFIX}/pin-gpu"
# The same, under keys that Kubeflow's notebook-controller does not copy into the pod
# template (they contain "notebook"): changing them does not recreate the pod.
NOTEBOOK_IDLE_TIMEOUT_ANNOTATION = f"{PREFIX}/notebook-idle-timeout"
NOTEBOOK_PIN_ANNOTATION = f"{PREFIX}/notebook-pin-gpu"
IDLE_TIMEOUT_ANNOTATIONS = (NOTEBOOK_IDLE_TIMEOUT_ANNOTATION, IDLE_TIMEOUT_ANNOTATION)
"""Keys that override the timeout, the first present one wins."""
PIN_ANNOTATIONS = (NOTEBOOK_PIN_ANNOTATION, PIN_ANNOTATION)

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_MAX_DIGITS = 9  # 31 years of seconds; longer strings are nonsense, not a timeout


@dataclass(frozen=True)
class Timeout:
    seconds: int
    reason: str | None
    """Why the timeout is not the annotation's value as written (None: it is, or there
    is no annotation)."""
    source: Literal["default", "annotation", "user"]


def parse_duration(text: str) -> int | None:
    """Seconds of "300", "90s", "5m", "1h" or "1h30m"; None when it is none of those."""
    value = text.strip().lower()
    if not value or len(value) > 3 * _MAX_DIGITS:
        return None
    if value.isdigit():
        return int(value) if len(value) <= _MAX_DIGITS else None
    match = _DURATION.match(value)
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {k: v for k, v in match.groupdict().items() if v is not None}
    if any(len(v) > _MAX_DIGITS for v in parts.values()):
        return None
    return (int(parts.get("h", 0)) * 3600 + int(parts.get("m", 0)) * 60
            + int(parts.get("s", 0)))


def resolve_timeout(settings: IdleSettings, annotation: str | None,
                    key: str = IDLE_TIMEOUT_ANNOTATION,
                    source: Literal["annotation", "user"] = "annotation") -> Timeout:
    """The timeout for a notebook: the admin's, or its annotation (under `key`, named in
    the reason; or the user's setting, `source` "user") clamped into bounds."""
    if annotation is None:
        return Timeout(settings.timeout_seconds, None, "default")
    seconds = parse_duration(annotation)
    if seconds is None:
        return Timeout(settings.timeout_seconds,
                       f"{key}: {annotation!r} is not seconds or a "
                       f"duration like 5m, 90s, 1h; using the default "
                       f"{settings.timeout_seconds}s", "default")
    clamped = min(max(seconds, settings.min_seconds), settings.max_seconds)
    if clamped != seconds:
        return Timeout(clamped,
                       f"{key}: {seconds}s is outside the admin's bounds "
                       f"[{settings.min_seconds}s, {settings.max_seconds}s]; using {clamped}s",
                       source)
    return Timeout(seconds, None, source)


def timeout_annotation(annotations: Mapping[str, str]) -> tuple[str, str] | None:
    """(key, value) of the annotation that overrides the timeout, if any."""
    for key in IDLE_TIMEOUT_ANNOTATIONS:
        value = annotations.get(key)
        if value is not None:
            return key, value
    return None


def pin_requested(annotations: Mapping[str, str]) -> bool:
    return any(annotations.get(key, "").strip().lower() == "true" for key in PIN_ANNOTATIONS)
