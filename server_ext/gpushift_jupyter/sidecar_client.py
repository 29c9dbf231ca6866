"""The one place that talks to the pod's gpushift sidecar (loopback HTTP + token).

The sidecar's token lives in the shared runtime volume (`api-token`, mode 0600, same
user); it is read on each call, so a sidecar that made a new one is followed. The
sidecar's own errors (`{"error", "detail"}` with 4xx) are passed through as they are:
they are written for people already. A sidecar that does not answer is 503.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from gpushift_jupyter.errors import ApiError

TOKEN_FILE = "api-token"  # noqa: S105 (a file name, not a secret)


class SidecarClient:
    def __init__(self, base_url: str, runtime_dir: Path, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.runtime_dir = runtime_dir
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _token(self) -> str:
        path = self.runtime_dir / TOKEN_FILE
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ApiError(503, "sidecar_unavailable",
                           f"the sidecar's token {path} cannot be read: {exc.strerror}") from None

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      *, timeout: float | None = None) -> tuple[int, Any]:
        """(status, JSON body or None). Raises ApiError for the sidecar's 4xx/5xx answers
        (its body passed on) and when it cannot be reached."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self._token()}"}
        try:
            async with self._session.request(
                    method, self.base_url + path, json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(503, "sidecar_unavailable",
                           f"the gpushift sidecar at {self.base_url} did not answer "
                           f"{method} {path}: {type(exc).__name__} {exc}".rstrip()) from None
        answer: Any = None
        if raw:
            try:
                answer = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ApiError(502, "sidecar_bad_answer",
                               f"the sidecar answered {method} {path} with {status} and "
                               "a body that is not JSON") from None
        if status >= 400:
            if isinstance(answer, dict) and "error" in answer:
                extra = {k: v for k, v in answer.items() if k not in ("error", "detail")}
                raise ApiError(status, str(answer["error"]), str(answer.get("detail", "")),
                               **extra)
            raise ApiError(502, "sidecar_bad_answer",
                           f"the sidecar answered {method} {path} with {status}")
        return status, answer

    async def get(self, path: str) -> Any:
        return (await self.request("GET", path))[1]

    async def post(self, path: str, body: dict[str, Any],
                   timeout: float | None = None) -> Any:
        return (await self.request("POST", path, body, timeout=timeout))[1]

    async def put(self, path: str, body: dict[str, Any]) -> Any:
        return (await self.request("PUT", path, body))[1]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
