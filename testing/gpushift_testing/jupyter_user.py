"""What a browser does to a Jupyter server, over HTTP and the kernel WebSocket: open a
notebook session, run code in its kernel, call gpushift's `/api_extension`. The
end-to-end tests and the migration bench act as the user with it.

Only the Jupyter messaging protocol's JSON form (the `v1.kernel.websocket.jupyter.org`
default of JupyterLab's older clients: whole messages as JSON text frames) is used.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp


class JupyterError(Exception):
    def __init__(self, status: int, body: Any, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body}")
        self.status, self.body = status, body


@dataclass
class Execution:
    status: str
    """"ok" or "error" (execute_reply)."""
    stdout: str = ""
    results: list[str] = field(default_factory=list)
    """text/plain of execute_result and display_data."""
    error: str | None = None
    execution_count: int | None = None
    output_at: float = 0.0
    """time.time() when its first output (stdout, a result or an error) arrived: what
    the user sees, before the kernel reports idle and the connection closes."""


class JupyterUser:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.session = aiohttp.ClientSession(headers={"Authorization": f"token {token}"})

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> JupyterUser:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def call(self, method: str, path: str, body: Any = None,
                   timeout: float = 60) -> tuple[int, Any]:
        """(status, JSON or None) of any request; never raises for an HTTP status."""
        async with self.session.request(method, self.base_url + path.lstrip("/"), json=body,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            raw = await r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                return r.status, raw.decode(errors="replace")

    async def ok(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        status, answer = await self.call(method, path, body, timeout)
        if status >= 400:
            raise JupyterError(status, answer, f"{method} {path}")
        return answer

    async def wait_until_up(self, timeout: float) -> float:
        """Seconds until `GET api/status` answers 200 (through the proxy: 503 while the
        pod is being replaced)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                status, _ = await self.call("GET", "api/status", timeout=5)
                if status == 200:
                    return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} did not come up in {timeout}s")
            await asyncio.sleep(0.2)

    async def open_notebook(self, path: str) -> str:
        """A session for the notebook (as JupyterLab opens it); its kernel id."""
        session = await self.ok("POST", "api/sessions", {
            "path": path, "name": path.rsplit("/", 1)[-1], "type": "notebook",
            "kernel": {"name": "python3"}})
        return str(session["kernel"]["id"])

    async def execute(self, kernel_id: str, code: str, timeout: float = 120) -> Execution:
        """Run `code` as a cell (store_history, not silent: kishu sees it) and collect
        what the notebook would show."""
        url = (self.base_url.replace("http", "ws", 1)
               + f"api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}")
        msg_id = uuid.uuid4().hex
        request = {
            "header": {"msg_id": msg_id, "username": "e2e", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }
        result = Execution(status="unknown")
        idle = replied = False
        async with self.session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10),
                                           max_msg_size=0) as ws:
            await ws.send_str(json.dumps(request))
            deadline = time.monotonic() + timeout
            while not (idle and replied):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the cell did not finish in {timeout}s: {code[:80]!r}")
                frame = await ws.receive(timeout=left)
                if frame.type != aiohttp.WSMsgType.TEXT:
                    if frame.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        raise ConnectionError(f"kernel websocket closed: {frame}")
                    continue
                message = json.loads(frame.data)
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if not result.output_at and kind in ("stream", "execute_result",
                                                     "display_data", "error"):
                    result.output_at = time.time()
                if kind == "stream" and content.get("name") == "stdout":
                    result.stdout += content["text"]
                elif kind in ("execute_result", "display_data"):
                    result.results.append(content["data"].get("text/plain", ""))
                elif kind == "error":
                    result.error = f"{content['ename']}: {content['evalue']}"
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
                elif kind == "execute_reply":
                    replied = True
                    result.status = content["status"]
                    result.execution_count = content.get("execution_count")
        return result

    async def gpushift(self, method: str, path: str = "", body: Any = None,
                       timeout: float = 300) -> tuple[int, Any]:
        return await self.call(method, "api_extension" + (f"/{path}" if path else ""),
                               body, timeout)
