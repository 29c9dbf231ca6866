"""The one place that talks to the pod's gpushift sidecar (loopback HTTP + token).

The sidecar's token lives in the shared runtime volume (`api-token`, mode 0600, same
user); it is read on each call, so a sidecar that made a new one is followed. The
sidecar's own errors (`{"error", "detail"}` with 4xx) are passed through as they are:
they are written for people already. A sidecar that does not answer is 503.

Tornado's HTTP client, not aiohttp's: the Jupyter server has tornado loaded already,
while importing aiohttp added 0.14-0.25 s to every server start (it builds its TLS
contexts at import), and a new pod's server start is on the path of every move.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from gpushift_jupyter.errors import ApiError

TOKEN_FILE = "api-token"  # noqa: S105 (a file name, not a secret)
MAX_CONCURRENT = 64
"""Requests in flight at once before more wait in tornado's queue (its default is 10,
and waits on the sidecar, such as a move's, hold one each)."""


class SidecarClient:
    def __init__(self, base_url: str, runtime_dir: Path, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.runtime_dir = runtime_dir
        self.timeout = timeout
        self._client: tuple[asyncio.AbstractEventLoop, AsyncHTTPClient] | None = None
        """Our own client (not tornado's shared one), for the loop it was made on."""

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
        headers = {"Authorization": f"Bearer {self._token()}"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            payload = b""
        limit = timeout or self.timeout
        request = HTTPRequest(self.base_url + path, method=method, headers=headers,
                              body=payload, connect_timeout=limit, request_timeout=limit,
                              follow_redirects=False)
        try:
            response = await self._http().fetch(request, raise_error=False)
        except (HTTPClientError, TimeoutError, OSError) as exc:
            # With raise_error=False only transport failures raise: refused, reset,
            # timed out (tornado's code 599).
            raise ApiError(503, "sidecar_unavailable",
                           f"the gpushift sidecar at {self.base_url} did not answer "
                           f"{method} {path}: {type(exc).__name__} {exc}".rstrip()) from None
        raw, status = response.body, response.code
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

    def _http(self) -> AsyncHTTPClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            self.close_client()
            client = AsyncHTTPClient(force_instance=True, max_clients=MAX_CONCURRENT)
            self._client = (loop, client)
        return self._client[1]

    def close_client(self) -> None:
        if self._client is not None:
            self._client[1].close()
            self._client = None

    async def close(self) -> None:
        self.close_client()
