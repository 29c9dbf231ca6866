"""The real `gpushift-webhook serve` with its background loops (self-managed certificates,
migration guard, Lease, server types) and an API server that drops every connection: each
loop that needs the API is named by a failing /healthz once its deadline passes,
admission and /readyz go on, and /metrics counts the loops. (An API server that stops
and comes back: tests/cluster/test_loops_apiserver_outage.py.)"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import start_webhook, stop


@pytest.fixture
def dropping_apiserver() -> Iterator[str]:
    """An address that accepts connections and closes them unanswered (an API server
    behind a load balancer with no backend). A hung one: test_kube_transport_sockets."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stopping = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stopping.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stopping.set()
    thread.join(2)
    server.close()


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


async def test_healthz_names_the_stalled_loops_while_admission_goes_on(
        tmp_path, cert_dir, dropping_apiserver):
    config = kubeconfig(tmp_path / "kubeconfig", dropping_apiserver)
    hook = start_webhook(
        tmp_path, cert_dir, "--namespace", "gpushift-system", "--kubeconfig", str(config),
        "--self-managed-certs", "--cert-deadline", "3", "--guard", "--guard-interval", "0.5",
        "--guard-deadline", "3", "--lease-deadline", "3", "--server-types-deadline", "3",
        "--notebooks-deadline", "3")
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while True:
                async with s.get(hook.url + "/healthz", ssl=hook.client_ssl()) as r:
                    body = await r.json()
                    if r.status == 503 and len(body["stalled"]) == 4:
                        break
                assert time.monotonic() < deadline, (r.status, body, hook.logs()[-3000:])
                await _sleep(0.2)
            assert body["status"] == "stalled"
            # The guard stands by (no Lease without the API): a standby's pass is
            # complete; the Lease loop is the one that cannot reach the API.
            assert [x["loop"] for x in body["stalled"]] == [
                "certificates", "lease", "notebooks", "server_types"]
            assert all(x["seconds_since_pass"] >= 3 and x["deadline_seconds"] == 3
                       for x in body["stalled"])
            assert "loop lease: no completed pass for" in body["detail"]
            # Reviews are still answered with the certificate loaded: ready.
            async with s.get(hook.url + "/readyz", ssl=hook.client_ssl()) as r:
                assert r.status == 200
            async with s.get(hook.url + "/metrics", ssl=hook.client_ssl()) as r:
                text = await r.text()
            assert 'gpushift_loop_restarts_total{loop="guard"} 0.0' in text
            assert 'gpushift_loop_deadline_seconds{loop="certificates"} 3.0' in text
            assert "process_cpu_seconds_total" in text and "gpushift_build_info{" in text
    finally:
        stop(hook)
    # Every failed call timed out as a KubeError and was logged as JSON by its loop;
    # nothing escaped as a crash.
    logs = hook.logs()
    assert '"certificate reconcile failed' in logs and "Unreachable" in logs
    assert "crashed" not in logs and "Traceback" not in logs


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
