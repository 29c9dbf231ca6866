"""GPU-hours on the webhook's /metrics, from a real `gpushift-webhook serve --guard`
process following the real API server's Notebooks: two moves to GPU, one idle move and
one manual move back, each made as the sidecar makes it (its patch as `default-editor`,
its migration annotation), with Kubeflow's notebook-controller recreating the pod on
kwok's nodes. The GPU-seconds held and reclaimed the scrape shows match what the test
saw (a GPU spec with a ready replica, from its patch to the next), and they add up
across the pod recreations."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import test_sidecar_patching as patching
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import wait_for
from gpushift_testing.webhook_process import LocalWebhook, serve_local_webhook
from test_sidecar_patching import MIRROR, NB, move

from gpushift_core.kube import KubeApi

notebook, sidecar = patching.notebook, patching.sidecar
# The watch's delay and the test's own polling, on each end of each interval.
SLACK = 1.5


@pytest.fixture(scope="module")
def webhook(control_plane: cpmod.ControlPlane,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    hook = serve_local_webhook(control_plane.kubeconfig, control_plane.api_client(),
                               tmp_path_factory.mktemp("webhook"), "--guard",
                               "--guard-interval", "1",
                               "--guard-lease-name", "gpushift-guard-gpu-hours")
    try:
        yield hook
    finally:
        hook.stop()


def scrape(hook: LocalWebhook) -> str:
    context = ssl.create_default_context(cafile=str(hook.workdir / "certs" / "ca.crt"))
    with urllib.request.urlopen(f"https://127.0.0.1:{hook.port}/metrics", context=context,
                                timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` with (at least) these labels; 0 if none."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ready_with(admin: Any, namespace: str, gpu: bool) -> float:
    """Wait until the Notebook's replica is ready with (or without) a GPU in its spec;
    the time it was first seen so."""
    def ready() -> bool:
        nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
        limits = nb["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        return (nb.get("status") or {}).get("readyReplicas") == 1 and (
            "nvidia.com/gpu" in limits) == gpu
    wait_for(f"the Notebook ready on {'GPU' if gpu else 'CPU'}", ready, 90, interval=0.1)
    return time.monotonic()


async def annotate(api: KubeApi, namespace: str, mid: str, phase: str, target: str,
                   trigger: str) -> None:
    await api.set_annotation(namespace, "nb", MIRROR, json.dumps({
        "id": mid, "phase": phase, "target": target, "trigger": trigger,
        "updated": "2026-01-01T00:00:00Z"}, separators=(",", ":")))


async def test_gpu_seconds_held_and_reclaimed_add_up_across_moves(
        webhook: LocalWebhook, admin: Any, sidecar: KubeApi, namespace: str,
        notebook: Any) -> None:
    notebook("nb")
    ready_with(admin, namespace, gpu=False)
    held = reclaimed = 0.0
    reclaim_from: float | None = None
    # Two moves to GPU, each held a few seconds; the first ends in an idle move, whose
    # reclaim lasts until the notebook holds its GPU again.
    for mid, hold, trigger_back in (("m1", 4.0, "idle"), ("m2", 3.0, "manual")):
        await annotate(sidecar, namespace, mid, "recreating", "gpu", "manual")
        _, to_gpu = await move(sidecar, namespace, "nb", "gpu")
        since = ready_with(admin, namespace, gpu=True)
        if reclaim_from is not None:
            reclaimed, reclaim_from = since - reclaim_from, None
        await annotate(sidecar, namespace, mid, "done", "gpu", "manual")
        await asyncio.sleep(hold)
        back = f"{mid}-back"
        await annotate(sidecar, namespace, back, "recreating", "cpu", trigger_back)
        await move(sidecar, namespace, "nb", "cpu", previous=to_gpu.previous_profile)
        held += time.monotonic() - since
        if trigger_back == "idle":
            reclaim_from = time.monotonic()
        ready_with(admin, namespace, gpu=False)
        await annotate(sidecar, namespace, back, "done", "cpu", trigger_back)
        await asyncio.sleep(2)  # on CPU a while
    await asyncio.sleep(1.5)  # the watch's last events
    text = scrape(webhook)
    got_held = sample(text, "gpushift_gpu_held_seconds_total", namespace=namespace,
                      notebook="nb", profile="nvidia-1")
    got_reclaimed = sample(text, "gpushift_gpu_reclaimed_seconds_total",
                           namespace=namespace, notebook="nb")
    print(f"\nGPU-seconds held: scraped {got_held:.2f}, seen {held:.2f}; reclaimed: "
          f"scraped {got_reclaimed:.2f}, seen {reclaimed:.2f}")
    assert abs(got_held - held) <= 2 * SLACK, text
    assert abs(got_reclaimed - reclaimed) <= 2 * SLACK, text
    assert sample(text, "gpushift_moves_total", namespace=namespace, target="gpu",
                  trigger="manual", outcome="done") == 2
    assert sample(text, "gpushift_moves_total", namespace=namespace, target="cpu",
                  trigger="idle", outcome="done") == 1
    assert sample(text, "gpushift_gpu_notebooks_holding", namespace=namespace) == 0
