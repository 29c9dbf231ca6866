"""The migration guard's Lease: leader election between replicas (take-over after expiry,
a leader that cannot renew, release and create races), its settings, and the CLI options
that turn the guard on and name its Lease."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from guard_fake_api import FakeApi
from guard_objects import T0

from gpushift_core.kube import KubeError
from gpushift_webhook import cli
from gpushift_webhook.lease import LeaderElector, LeaseSettings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(api: FakeApi, identity: str, clock: Clock, **kwargs: Any) -> LeaderElector:
    settings = LeaseSettings(namespace="gpushift-system", name="gpushift-guard",
                             identity=identity, duration_seconds=15, renew_seconds=5)
    return LeaderElector(api, settings, clock=clock,
                         wall=lambda: T0 + dt.timedelta(seconds=clock.t), **kwargs)


async def test_of_two_replicas_one_leads_and_the_other_takes_over_after_expiry():
    api, clock = FakeApi(), Clock()
    changes: list[tuple[str, bool]] = []
    a = elector(api, "a", clock, on_change=lambda v: changes.append(("a", v)))
    b = elector(api, "b", clock, on_change=lambda v: changes.append(("b", v)))
    assert await a.tick() is True
    assert await b.tick() is False and b.holder == "a"
    lease = api.leases[("gpushift-system", "gpushift-guard")]
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"].endswith("Z")
    # a renews; b keeps standing by.
    for _ in range(4):
        clock.t += 5
        assert await a.tick() is True
        assert await b.tick() is False
    # a stops (killed): b takes over once the Lease stood still for 15 s of b's clock.
    seen_at = clock.t
    while not await b.tick():
        clock.t += 1
        assert clock.t - seen_at <= 16
    assert clock.t - seen_at >= 15
    lease = api.leases[("gpushift-system", "gpushift-guard")]
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    # a, back with its old state: its renewal loses (b holds), and it stops acting.
    assert await a.tick() is False and a.holder == "b"
    assert changes == [("a", True), ("b", True), ("a", False)]


async def test_a_leader_that_cannot_renew_stops_acting_before_anyone_can_take_over():
    api, clock = FakeApi(), Clock()
    a = elector(api, "a", clock)
    assert await a.tick()

    async def broken(*args: Any) -> None:
        raise KubeError(503, "ServiceUnavailable", "etcd")

    api.get_lease = broken  # type: ignore[method-assign]
    clock.t += 9
    assert await a.tick() is True  # within the renew deadline (10 s)
    clock.t += 1.5
    assert await a.tick() is False and a.is_leader is False


async def test_released_lease_is_taken_over_at_once_and_create_races_lose_cleanly():
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    # Both saw no Lease; a created it first: b's create gets 409 and b stands by.
    assert await a.tick()
    original_get = api.get_lease

    async def none_then_real(ns: str, name: str) -> Any:
        api.get_lease = original_get  # type: ignore[method-assign]
        return None

    api.get_lease = none_then_real  # type: ignore[method-assign]
    assert await b.tick() is False
    assert await a.release() is True
    assert api.leases[("gpushift-system", "gpushift-guard")]["spec"]["holderIdentity"] == ""
    assert await b.tick() is True  # no waiting out the duration


def test_lease_settings_are_checked():
    with pytest.raises(ValueError):
        LeaseSettings(namespace="ns", name="l", identity="a", duration_seconds=5,
                      renew_seconds=5)
    with pytest.raises(ValueError):
        LeaseSettings(namespace="", name="l", identity="a")


# ----------------------------------------------------------------------------- CLI


def test_cli_guard_needs_a_namespace(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GPUSHIFT_NAMESPACE", raising=False)
    monkeypatch.setattr(cli.jsonlog, "setup", lambda level: None)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--cert-dir", str(tmp_path), "--guard"])
    assert "--guard needs --namespace" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--cert-dir", str(tmp_path), "--guard", "--namespace", "x",
                  "--guard-renew-interval", "20"])


def test_cli_guard_reads_the_timeout_from_the_config(tmp_path, monkeypatch):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("guard:\n  ready_timeout_seconds: 10\n")
    seen: dict[str, Any] = {}

    async def fake_serve_forever(config: Any, args: Any) -> None:
        seen["config"], seen["args"] = config, args

    monkeypatch.setattr(cli, "serve_forever", fake_serve_forever)
    monkeypatch.setattr(cli.jsonlog, "setup", lambda level: None)
    assert cli.main(["serve", "--cert-dir", str(tmp_path), "--config", str(config_file),
                     "--namespace", "gpushift-system", "--guard", "--guard-lease-name",
                     "team-guard", "--guard-interval", "1"]) == 0
    args = seen["args"]
    assert seen["config"].guard.ready_timeout_seconds == 10
    assert (args.guard_lease.name, args.guard_lease.namespace) == ("team-guard",
                                                                   "gpushift-system")
    assert args.guard_interval == 1 and args.guard_lease.duration_seconds == 15
