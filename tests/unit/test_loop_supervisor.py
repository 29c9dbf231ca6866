"""Supervised background loops (gpushift_webhook.supervisor): a crash restarts the loop
with capped exponential backoff, logged and counted; a loop without a completed pass
within its deadline makes /healthz answer 503 naming it; the guard's and the Lease's
loops report their passes and survive a crash; the webhook's registry keeps the default
collectors and gpushift_build_info."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from guard_fake_api import FakeApi
from prometheus_client import generate_latest

from gpushift_certs.reloading import ReloadingCertificate
from gpushift_core.kube import KubeError, Unreachable
from gpushift_core.version import __version__
from gpushift_webhook import guard_loop
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.lease import LeaseSettings
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.server import make_app
from gpushift_webhook.supervisor import LoopHealth, LoopSettings, Supervisor


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def restarts(metrics: WebhookMetrics, loop: str) -> float:
    value = metrics.registry.get_sample_value("gpushift_loop_restarts_total", {"loop": loop})
    assert value is not None
    return value


async def test_a_crashing_loop_is_restarted_with_capped_backoff_logged_and_counted(caplog):
    metrics, pauses = WebhookMetrics(), []
    crashes = 5

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    supervisor = Supervisor(metrics, sleep=sleep)
    ran = asyncio.Event()

    async def body(health: LoopHealth) -> None:
        nonlocal crashes
        if crashes:
            crashes -= 1
            raise ValueError(f"bug {crashes}")
        health.passed()
        ran.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="gpushift.loops"):
        task = supervisor.start(LoopSettings("guard", 30, backoff_initial_seconds=1,
                                             backoff_max_seconds=4), body)
        await asyncio.wait_for(ran.wait(), 5)
    assert pauses == [1, 2, 4, 4, 4]
    assert restarts(metrics, "guard") == 5
    health = supervisor.loops["guard"]
    assert health.restarts == 5 and health.last_error == "ValueError: bug 0"
    crash_logs = [r for r in caplog.records if r.name == "gpushift.loops"]
    assert len(crash_logs) == 5 and crash_logs[0].exc_info is not None
    assert crash_logs[0].loop == "guard"
    assert crash_logs[-1].backoff_seconds == 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_backoff_starts_again_after_a_loop_that_worked_for_a_while():
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    supervisor = Supervisor(sleep=sleep)
    runs = 0
    done = asyncio.Event()

    async def body(health: LoopHealth) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            health.passed()  # the third run works for a while, then crashes
        if runs == 5:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError("boom")

    task = supervisor.start(LoopSettings("lease", 30), body)
    await asyncio.wait_for(done.wait(), 5)
    assert pauses == [1, 2, 1, 2]
    task.cancel()


async def test_a_loop_that_returns_is_restarted_too():
    supervisor = Supervisor(sleep=lambda s: asyncio.sleep(0))
    runs = 0

    async def body(health: LoopHealth) -> None:
        nonlocal runs
        runs += 1
        if runs > 2:
            await asyncio.Event().wait()

    task = supervisor.start(LoopSettings("certificates", 30), body)
    for _ in range(20):
        await asyncio.sleep(0)
    assert runs == 3 and supervisor.loops["certificates"].last_error == (
        "RuntimeError: the loop returned")
    task.cancel()


def test_stalled_after_the_deadline_counted_from_the_start_then_from_each_pass():
    clock = Clock()
    supervisor = Supervisor(clock=clock)
    health = LoopHealth(LoopSettings("guard", 30), clock, None)
    supervisor.loops["guard"] = health
    clock.t += 30
    assert supervisor.stalled() == []
    clock.t += 1
    [stall] = supervisor.stalled()
    assert (stall.loop, stall.seconds_since_pass, stall.deadline_seconds) == ("guard", 31, 30)
    health.passed()
    assert supervisor.stalled() == []


def test_settings_are_checked():
    with pytest.raises(ValueError, match="deadline"):
        LoopSettings("guard", 0)
    with pytest.raises(ValueError, match="backoff"):
        LoopSettings("guard", 10, backoff_initial_seconds=5, backoff_max_seconds=1)
    with pytest.raises(ValueError, match="name"):
        LoopSettings("", 10)


async def test_healthz_fails_with_the_stalled_loop_named_and_readyz_is_unaffected(
        aiohttp_client, tmp_path: Path):
    clock = Clock()
    supervisor = Supervisor(clock=clock)
    for name, deadline in (("guard", 30), ("certificates", 600)):
        supervisor.loops[name] = LoopHealth(LoopSettings(name, deadline), clock, None)
    app = make_app(WebhookConfig(), ReloadingCertificate(str(tmp_path)), loops=supervisor)
    client = await aiohttp_client(app)
    r = await client.get("/healthz")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "ok" and set(body["loops"]) == {"guard", "certificates"}
    clock.t += 45
    supervisor.loops["guard"].restarts = 2
    supervisor.loops["guard"].last_error = "ValueError: bug"
    r = await client.get("/healthz")
    assert r.status == 503
    body = await r.json()
    assert body["status"] == "stalled"
    assert body["stalled"] == [{"loop": "guard", "seconds_since_pass": 45,
                                "deadline_seconds": 30, "restarts": 2,
                                "last_error": "ValueError: bug"}]
    assert body["detail"] == "loop guard: no completed pass for 45 s (deadline 30 s)"
    # Readiness is about answering reviews (no certificate here), not about the loops.
    r = await client.get("/readyz")
    assert r.status == 503 and "stalled" not in (await r.json())["status"]


async def test_metrics_keep_the_default_collectors_and_build_info():
    metrics = WebhookMetrics()
    Supervisor(metrics).start(LoopSettings("guard", 30), lambda h: asyncio.Event().wait()
                              ).cancel()
    text = generate_latest(metrics.registry).decode()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "python_gc_collections_total", "python_info"):
        assert f"\n{name}" in text, name
    assert 'gpushift_build_info{python_version="' in text
    assert metrics.registry.get_sample_value(
        "gpushift_build_info", {"version": __version__,
                                "python_version": __import__("platform").python_version()}
    ) == 1
    assert restarts(metrics, "guard") == 0
    assert metrics.registry.get_sample_value("gpushift_loop_deadline_seconds",
                                             {"loop": "guard"}) == 30


class FlakyApi(FakeApi):
    """The guard's fake API with faults: `list_faults` raised by list_notebooks, and
    `lease_faults` by get_lease, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.list_faults: list[Exception] = []
        self.lease_faults: list[Exception] = []
        self.lists = 0

    async def list_notebooks(self) -> list[dict[str, Any]]:
        self.lists += 1
        if self.list_faults:
            raise self.list_faults.pop(0)
        return await super().list_notebooks()

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.lease_faults:
            raise self.lease_faults.pop(0)
        return await super().get_lease(namespace, name)


async def until(predicate: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_guard_and_lease_loops_report_passes_and_survive_a_crash():
    api, metrics = FlakyApi(), WebhookMetrics()
    supervisor = Supervisor(metrics)
    # A bug in the guard's pass (not an API error) and an apiserver that does not answer
    # the Lease loop for a while.
    api.list_faults = [RuntimeError("bug in a pass"), Unreachable("no route")]
    settings = guard_loop.GuardLoopSettings(
        lease=LeaseSettings(namespace="gpushift-system", name="gpushift-guard",
                            identity="a", duration_seconds=1.5, renew_seconds=0.05),
        interval_seconds=0.02, guard_deadline_seconds=30, lease_deadline_seconds=30)
    task = asyncio.create_task(guard_loop.run(api, WebhookConfig(), settings, metrics,
                                              supervisor))
    await until(lambda: "guard" in supervisor.loops and supervisor.loops["guard"].passes >= 3)
    guard, lease = supervisor.loops["guard"], supervisor.loops["lease"]
    assert guard.restarts == 1 and guard.last_error == "RuntimeError: bug in a pass"
    assert restarts(metrics, "guard") == 1 and metrics.guard_errors._value.get() == 1
    assert lease.passes >= 1 and lease.restarts == 0
    # The Lease loop completes no pass while the API does not answer.
    before = lease.passes
    api.lease_faults = [KubeError(503, "ServiceUnavailable", "down")] * 5
    await until(lambda: not api.lease_faults)
    after_faults = lease.passes
    await until(lambda: lease.passes > after_faults)
    assert after_faults - before <= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.leases[("gpushift-system", "gpushift-guard")]["spec"]["holderIdentity"] == ""
