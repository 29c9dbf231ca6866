"""The sidecar's Notebook patching when the API server cannot be reached: calls made
before the connection works (as before the Istio proxy is up) are retried until it
answers, and an API that never answers is Unreachable after the retry deadline.

As in test_sidecar_patching.py (whose `notebook` fixture this is), the sidecar's client
runs as `default-editor`, bound to Kubeflow's kubeflow-edit (the sidecar's rules aggregated in).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_patching as patching
from gpushift_testing.controlplane import ControlPlane
from test_sidecar_patching import MIRROR, NB

from gpushift_core.kube import KubeApi, Retry, Unreachable

notebook = patching.notebook


# ----------------------------------------------------------------------------- unreachable


class LateProxy:
    """A TCP forwarder to the API server that starts listening only when told to: the
    API as the sidecar sees it before the Istio proxy is up (connection refused)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("https://").rsplit(":", 1)
        self.upstream = (host, int(port))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def copy_(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy_(reader, up_writer), copy_(up_reader, writer))


async def test_api_unreachable_at_start_is_retried_until_it_answers(
        control_plane: ControlPlane, sidecar_kubeconfig: Callable[[str], Path],
        admin: Any, namespace: str, notebook: Any) -> None:
    notebook("nb")
    proxy = LateProxy(control_plane.server)
    late = KubeApi.connect(str(sidecar_kubeconfig(proxy.url)),
                           retry=Retry(deadline_seconds=20, initial_seconds=0.1,
                                       max_seconds=0.5))
    try:
        t0 = time.monotonic()
        read = asyncio.create_task(late.get_notebook(namespace, "nb"))
        patch = asyncio.create_task(late.set_annotation(namespace, "nb", MIRROR, "late"))
        await asyncio.sleep(1.5)
        assert not read.done() and not patch.done()
        await proxy.start()
        nb = await asyncio.wait_for(read, 10)
        assert nb["metadata"]["name"] == "nb"
        result = await asyncio.wait_for(patch, 10)
        waited = time.monotonic() - t0
        assert result.changed and 1.5 <= waited < 10, waited
        print(f"\nAPI reachable after {waited:.2f}s: read and patch went through")
    finally:
        await proxy.stop()
        late.close()
    got = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    assert got["metadata"]["annotations"][MIRROR] == "late"


async def test_api_that_never_answers_is_unreachable_after_the_deadline(
        sidecar_kubeconfig: Callable[[str], Path], namespace: str) -> None:
    proxy = LateProxy("https://127.0.0.1:1")  # never started: connection refused
    api = KubeApi.connect(str(sidecar_kubeconfig(proxy.url)),
                          retry=Retry(deadline_seconds=1.0, initial_seconds=0.1,
                                      max_seconds=0.2))
    try:
        t0 = time.monotonic()
        with pytest.raises(Unreachable) as err:
            await api.get_notebook(namespace, "nb")
        assert 0.5 < time.monotonic() - t0 < 5
        assert err.value.status == 0 and "Connection" in err.value.message, err.value
    finally:
        api.close()
