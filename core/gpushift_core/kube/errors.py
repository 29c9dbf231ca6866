"""Errors of Kubernetes API calls, carrying the API's Status (kr8s-style)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Self

from gpushift_core.kube.connection import ApiError

__all__ = ["KubeError", "MaybeSent", "PatchConflictError", "Unreachable"]


class KubeError(Exception):
    """An API call failed; `status`, `reason`, `message` (and `details`) come from the
    API's Status. Status 0: no answer from the API (see `Unreachable`)."""

    def __init__(self, status: int, reason: str, message: str,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @classmethod
    def from_api(cls, exc: ApiError) -> Self:
        try:
            body = json.loads(exc.body or "{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        details = body.get("details")
        return cls(int(exc.status or 0), str(body.get("reason") or exc.reason or ""),
                   str(body.get("message") or exc.body or exc.reason or ""),
                   details if isinstance(details, dict) else None)

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def patch_not_applicable(self) -> bool:
        """422 without causes: the JSON Patch itself did not apply (a `test` failed, or a
        path it removes or replaces is gone): the object changed since it was read. A
        422 that the object's schema or validation raised names its causes."""
        return self.status == 422 and not self.details.get("causes")

    @property
    def stale(self) -> bool:
        """The write was based on an old read: read again and retry."""
        return self.conflict or self.patch_not_applicable


class Unreachable(KubeError):
    """No answer from the API server within the retry deadline (network, Istio proxy not
    up, TLS handshake, a read that timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unreachable", message)


class MaybeSent(KubeError):
    """A write's connection broke (or the server answered 500/502/504) after the request
    may have reached the server: whether it was carried out is unknown. Repeating it
    blindly could do it twice; the caller reads the object again to find out."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unknown", message)


class PatchConflictError(KubeError):
    """The object kept changing under the patch: `attempts` reads and patches failed."""

    def __init__(self, last: KubeError, attempts: int) -> None:
        super().__init__(last.status, last.reason,
                         f"gave up after {attempts} attempts: {last.message}", last.details)
        self.attempts = attempts
