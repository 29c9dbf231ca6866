"""The one error type of the extension's API: an HTTP status, a code and a sentence."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success. Bad input is 4xx; a part that is down (the sidecar,
    a kernel) is 502/503/504. The body is always `{"error", "detail", ...extra}`."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}
