"""GPU-hours on the webhook's /metrics, from a real `gpushift-webhook serve --guard`
process following the real API server's Notebooks: two moves to GPU, one idle move and
one manual move back, each made as the sidecar makes it (its patch as `default-editor`,
its migration annotation), with Kubeflow's notebook-controller recreating the pod on
kwok's nodes. The GPU-seconds held and reclaimed the scrape shows match what the test
saw (a GPU spec with a ready replica, from its patch to the next), and they add up
across the pod recreations.

Then the real `gpushift-sidecar serve` of a GPU pod: a GPU cell reported running for
two seconds is GPU work its Notebook annotation reports and the scrape counts as busy
GPU-seconds; its idle move's phase times reach the phase-duration histogram."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_idle as idle
import test_sidecar_migration as mig
import test_sidecar_patching as patching
from gpushift_testing import controlplane as cpmod
from gpushift_testing.controlplane import ControlPlane
from gpushift_testing.kube import wait_for
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.webhook_process import LocalWebhook, serve_local_webhook
from gpushift_testing.workloads import wait_running
from test_sidecar_patching import MIRROR, NB, move

from gpushift_core.gpu_activity import read_gpu_activity
from gpushift_core.kube import KubeApi
from gpushift_webhook.config import WebhookConfig

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


@pytest.fixture
def sidecar_settings() -> WebhookConfig:
    return idle.SETTINGS


@pytest.fixture
def sidecar_args() -> list[str]:
    return ["--idle-tick", "0.1", "--activity-interval", "0.3"]


async def test_gpu_work_reported_by_the_sidecar_is_counted_busy_with_the_moves_phases(
        webhook: LocalWebhook, admin: Any, namespace: str, tmp_path: Path,
        control_plane: ControlPlane, start_sidecar: Callable[..., SidecarProcess]) -> None:
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    workspace = tmp_path / "nb-workspace"
    idle.gpu_notebook(admin, namespace, "nb", workspace, {idle.NB_TIMEOUT: "3"})
    try:
        gpu_pod = wait_running(admin.core, namespace, "nb-0")
        gpu = start_sidecar(PodFacts.of(gpu_pod), workspace, "run-gpu")

        def activity() -> Any:
            nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
            return read_gpu_activity(nb)
        # Before any GPU work the sidecar says so: a report sees a GPU held idle from
        # the pod's start, not a notebook it knows nothing about.
        first = wait_for("the GPU pod's first activity write", activity, 10, interval=0.1,
                         describe=lambda: gpu.logs()[-2000:])
        assert (first.pod, first.busy, first.last_work) == (gpu_pod.metadata.uid, 0.0, None)
        train = workspace / "work" / "train.ipynb"
        mig.kishu_db(train, "c-1", workspace=workspace)
        assert gpu.request("POST", "/notebooks", {"path": str(train)})[0] == 200
        cell = {"kernel_id": "k1", "gpu_cell_running": True}
        assert gpu.request("POST", "/activity", cell)[0] == 204
        await asyncio.sleep(2.0)
        assert gpu.request("POST", "/activity", {**cell, "gpu_cell_running": False})[0] == 204

        # A write while the cell still ran says lastWork == at (work is "now"); the one to
        # compare with later is the first written after the cell ended (seen in CI: a
        # write 5 ms before the end, 2.004 s busy, then 2.009 s at the stop).
        reported = wait_for("the GPU work on the Notebook, after it ended", lambda: (
            a if (a := activity()) is not None and a.busy >= 1.9 and a.last_work
            and a.last_work < a.at else None),
            10, interval=0.1, describe=lambda: (activity(), gpu.logs()[-2000:]))
        assert reported.pod == gpu_pod.metadata.uid
        assert reported.busy < 3.0, reported  # the cell's 2 s, not the idle seconds after

        # Nobody acts: after 3 s without GPU work the idle move takes it to CPU; the new
        # pod's sidecar ends the move, its annotation with the seconds of each phase.
        cpu_pod = wait_running(admin.core, namespace, "nb-0",
                                        not_uid=gpu_pod.metadata.uid, timeout=60)
        assert gpu.stop() == 0
        final = activity()
        assert final is not None and final.busy == reported.busy  # no GPU work since
        cpu = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-cpu")
        cpu.wait_phase("restoring")
        status, done = cpu.request("POST", "/migrations/current/restore", {"ok": True})
        assert status == 200 and done["phase"] == "done", done
        assert cpu.stop() == 0
        nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
        phases = json.loads(nb["metadata"]["annotations"][MIRROR])["phases"]
        assert set(phases) == {"requested", "checkpointing", "checkpointed", "patching",
                               "recreating", "restoring"}, phases

        def scraped() -> str | None:
            text = scrape(webhook)
            return text if sample(text, "gpushift_moves_total", namespace=namespace,
                                  target="cpu", trigger="idle", outcome="done") else None
        text = wait_for("the idle move counted", scraped, 10, interval=0.2)
        busy = sample(text, "gpushift_gpu_busy_seconds_total", namespace=namespace,
                      notebook="nb")
        held = sample(text, "gpushift_gpu_held_seconds_total", namespace=namespace,
                      notebook="nb")
        print(f"\nGPU-seconds busy: scraped {busy:.3f}, reported {final.busy:.3f}; held "
              f"{held:.1f}; phases {phases}")
        assert busy == pytest.approx(final.busy, abs=1e-6), text
        assert held > busy + 2, text  # the idle seconds before the move were held, not busy
        for phase, seconds in phases.items():
            count = sample(text, "gpushift_move_phase_duration_seconds_count",
                           target="cpu", phase=phase)
            total = sample(text, "gpushift_move_phase_duration_seconds_sum",
                           target="cpu", phase=phase)
            assert (count, total) == (1, pytest.approx(seconds, abs=1e-6)), (phase, text)
    finally:
        try:
            admin.core.delete_persistent_volume(f"{namespace}-nb-workspace"[:63])
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise
