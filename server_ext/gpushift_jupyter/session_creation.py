"""One new session per notebook at a time.

jupyter_server's `POST /api/sessions` looks for the path's session and creates one in
separate steps, and the session is findable only once its kernel has started. On a new
pod the server's restore opens each notebook's session (`pod_sessions.notebook_kernel`)
the moment the server runs — and a browser that reconnects at that moment asks for the
same notebook's session: two kernels started side by side (each slower for the other),
one of them closed again, and the restore waited for the later one.

`serialize_session_creation` wraps the server's session manager so that a request for a
path whose session is being created waits for that creation and gets its session. A
creation that fails lets the next one try; a request naming an existing kernel, or no
path, goes through as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

WRAPPED = "_gpushift_serialized"
"""Set on a wrapped manager: wrapping twice changes nothing."""


def serialize_session_creation(manager: Any) -> None:
    """Replace `manager.create_session` (this instance only) by the serialized one."""
    if getattr(manager, WRAPPED, False):
        return
    create = manager.create_session
    in_flight: dict[str, asyncio.Event] = {}

    async def create_session(path: str | None = None, name: str | None = None,
                             type: str | None = None,
                             kernel_name: str | None = None,
                             kernel_id: str | None = None) -> dict[str, Any]:
        if path is None or kernel_id is not None:
            return dict(await create(path=path, name=name, type=type,
                                     kernel_name=kernel_name, kernel_id=kernel_id))
        while path in in_flight:
            await in_flight[path].wait()
            if await manager.session_exists(path=path):
                return dict(await manager.get_session(path=path))
        done = in_flight[path] = asyncio.Event()
        try:
            return dict(await create(path=path, name=name, type=type,
                                     kernel_name=kernel_name, kernel_id=kernel_id))
        finally:
            del in_flight[path]
            done.set()

    manager.create_session = create_session
    setattr(manager, WRAPPED, True)
