"""The webhook's background loops through a 30 s API server outage.

A control plane of its own (the kube-apiserver is frozen with SIGSTOP, which the other
modules' components should not live through): gpushift installed by helm, the webhook
running locally with self-managed certificates and the migration guard, every loop's
deadline 8 s. While the API server does not answer, `/healthz` turns red naming the
loops that call it, and `/readyz` stays green (the webhook still answers reviews with
the certificate it holds). After SIGCONT every loop completes passes again, `/healthz`
is green, no loop crashed, and a notebook pod created then gets the sidecar.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import wait_for
from gpushift_testing.webhook_process import LocalWebhook, serve_local_webhook
from test_webhook_cluster import SIDECAR, create_notebook, label_namespace, running_pod

LOOPS = {"certificates", "guard", "lease", "notebooks", "server_types"}
DEADLINE = 8
OUTAGE = 30


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cpmod.ControlPlane]:
    """This module's control plane, whose kube-apiserver the test freezes."""
    if cpmod.missing_binaries():
        pytest.fail(f"control plane binaries missing: {cpmod.missing_binaries()}")
    plane = cpmod.ControlPlane(tmp_path_factory.mktemp("outage-plane"))
    try:
        plane.start()
    except cpmod.ControlPlaneError as e:
        pytest.fail(f"control plane did not start: {e}\n{plane.logs_tail(30)}")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def webhook(control_plane: cpmod.ControlPlane,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    deadline = str(DEADLINE)
    hook = serve_local_webhook(
        control_plane.kubeconfig, control_plane.api_client(),
        tmp_path_factory.mktemp("webhook"),
        "--guard", "--guard-interval", "1", "--guard-lease-duration", "6",
        "--guard-renew-interval", "1", "--guard-deadline", deadline,
        "--lease-deadline", deadline, "--cert-deadline", deadline,
        "--server-types-deadline", deadline, "--notebooks-deadline", deadline,
        "--notebooks-watch-seconds", "5")
    try:
        yield hook
    finally:
        hook.stop()


def get(hook: LocalWebhook, path: str) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(hook.workdir / "certs" / "ca.crt"))
    url = f"https://127.0.0.1:{hook.port}{path}"
    try:
        with urllib.request.urlopen(url, context=context, timeout=3) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read().decode(), e.code
    return status, json.loads(body) if path != "/metrics" else body


def passes(hook: LocalWebhook) -> dict[str, int]:
    status, body = get(hook, "/healthz")
    assert status == 200, body
    return {name: loop["passes"] for name, loop in body["loops"].items()}


def test_loops_go_red_during_an_apiserver_outage_and_resume_after_it(
        control_plane: cpmod.ControlPlane, webhook: LocalWebhook, admin: Any,
        namespace: str) -> None:
    wait_for("every loop's first pass", lambda: set(passes(webhook)) == LOOPS and all(
        passes(webhook).values()), 30, describe=webhook.logs)
    before = passes(webhook)
    apiserver = control_plane.procs["kube-apiserver"]
    assert apiserver.pid is not None
    os.kill(apiserver.pid, signal.SIGSTOP)
    red: dict[str, float] = {}
    ready_during = set()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < OUTAGE:
            status, body = get(webhook, "/healthz")
            if status == 503:
                for stall in body["stalled"]:
                    red.setdefault(stall["loop"], round(time.monotonic() - t0, 1))
            ready_during.add(get(webhook, "/readyz")[0])
            time.sleep(0.5)
    finally:
        os.kill(apiserver.pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    print(f"\n/healthz named, seconds into the outage: {red}")
    # Every loop that calls the API is named once its deadline has passed since its last
    # pass (each passed within the second before the freeze); the guard too: it leads,
    # and its pass hangs on a call that times out only after 15 s. The server types read
    # the Notebook watch's store, which counts as following until the silent watch
    # times out (5 + 15 s): named later, if at all within the outage.
    direct = LOOPS - {"server_types"}
    assert direct <= set(red), (red, webhook.logs()[-3000:])
    assert all(DEADLINE - 1.5 <= red[loop] < DEADLINE + 4 for loop in direct), red
    assert red.get("server_types", DEADLINE) >= DEADLINE - 1.5, red
    assert ready_during == {200}

    # Every loop completes passes again, and /healthz is green.
    def all_resumed() -> bool:
        status, body = get(webhook, "/healthz")
        return status == 200 and all(body["loops"][n]["passes"] > before[n] for n in LOOPS)

    wait_for("every loop passing again", all_resumed, 60, interval=0.5,
             describe=lambda: (get(webhook, "/healthz"), webhook.logs()[-3000:]))
    print(f"all loops green {time.monotonic() - resumed_at:.1f} s after the API server "
          "came back")
    _, metrics = get(webhook, "/metrics")
    for loop in LOOPS:
        assert f'gpushift_loop_restarts_total{{loop="{loop}"}} 0.0' in metrics, loop
    assert "crashed" not in webhook.logs()

    # Admission works as before: a notebook pod created now gets the sidecar.
    label_namespace(admin.core, namespace, "true")
    create_notebook(admin.custom, namespace, "after")
    pod = running_pod(admin.core, namespace, "after")
    assert SIDECAR in [c.name for c in pod.spec.init_containers or []]
