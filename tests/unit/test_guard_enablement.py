"""The guard acts only in namespaces where gpushift is enabled: the pure rule
(`gpushift_webhook.enablement`, the chart's namespaceSelector in code) and a guard pass
over stuck moves in enabled, unlabelled, opted-out and excluded namespaces (in-memory API,
tests/unit/guard_fake_api.py)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

import pytest
from guard_fake_api import FakeApi
from guard_objects import CONFIG, NS, T0, TIMEOUT, stuck_gpu

from gpushift_core.labels import ENABLED_LABEL, MIGRATION_ANNOTATION
from gpushift_webhook.enablement import (
    EnablementMode,
    namespace_enabled,
    namespace_selector,
)
from gpushift_webhook.guard import MigrationGuard
from gpushift_webhook.guard_decision import ActionKind

OPT_IN, CLUSTER_WIDE = EnablementMode.OPT_IN, EnablementMode.CLUSTER_WIDE

# (labels, opt-in, cluster-wide)
CASES = [
    ({ENABLED_LABEL: "true"}, True, True),
    ({}, False, True),
    (None, False, True),
    ({ENABLED_LABEL: "false"}, False, False),
    ({ENABLED_LABEL: "yes"}, False, True),  # only "true" opts in, only "false" out
    ({ENABLED_LABEL: "True"}, False, True),  # label values are case-sensitive
    ({"other": "true"}, False, True),
]


@pytest.mark.parametrize(("labels", "opt_in", "cluster_wide"), CASES)
def test_the_rule_of_the_namespace_selector(labels, opt_in, cluster_wide):
    assert namespace_enabled("team-a", labels, OPT_IN) is opt_in
    assert namespace_enabled("team-a", labels, CLUSTER_WIDE) is cluster_wide


@pytest.mark.parametrize("mode", list(EnablementMode))
def test_excluded_namespaces_never_whatever_their_labels(mode):
    on = {ENABLED_LABEL: "true"}
    assert not namespace_enabled("kube-system", on, mode)
    assert not namespace_enabled("gpushift-system", on, mode, ["gpushift-system"])
    assert not namespace_enabled("team-b", on, mode, ("kube-system", "team-b"))
    assert not namespace_enabled("", on, mode)
    assert namespace_enabled("team-a", on, mode, ["team-b"])


def test_the_selector_matches_the_chart_modes():
    assert namespace_selector(OPT_IN) == "gpushift.io/enabled=true"
    assert namespace_selector(CLUSTER_WIDE) == "gpushift.io/enabled!=false"
    assert [m.value for m in EnablementMode] == ["opt-in", "cluster-wide"]


# ----------------------------------------------------------------------------- a pass


def stuck_in(namespace: str) -> tuple[dict, dict]:
    """A move to GPU stuck Pending past the timeout, in `namespace`."""
    _, moved, stuck = stuck_gpu()
    moved, stuck = copy.deepcopy(moved), copy.deepcopy(stuck)
    moved["metadata"]["namespace"] = stuck["metadata"]["namespace"] = namespace
    return moved, stuck


async def pass_over(api: FakeApi, mode: EnablementMode, excluded: list[str] | None = None
                    ) -> dict[str, ActionKind]:
    config = CONFIG if excluded is None else dataclasses.replace(
        CONFIG, excluded_namespaces=excluded)
    guard = MigrationGuard(api, config, clock=lambda: T0 + dt.timedelta(seconds=TIMEOUT + 1),
                           timeout_seconds=TIMEOUT, enablement=mode)
    return {o.namespace: o.action for o in await guard.pass_once()}


def api_with(namespaces: dict[str, dict[str, str]]) -> FakeApi:
    api = FakeApi()
    for name, labels in namespaces.items():
        moved, stuck = stuck_in(name)
        api.add_notebook(moved)
        api.add_pod(stuck)
        api.namespaces[name] = dict(labels)
    return api


async def test_opt_in_rolls_back_only_in_labelled_namespaces():
    api = api_with({NS: {ENABLED_LABEL: "true"}, "unlabelled": {},
                    "opted-out": {ENABLED_LABEL: "false"}})
    assert await pass_over(api, OPT_IN) == {NS: ActionKind.ROLLBACK}
    assert api.namespace_selectors == ["gpushift.io/enabled=true"]
    # Left alone: spec, annotation and the stuck pod as they were; no Event about them.
    for ns in ("unlabelled", "opted-out"):
        moved, _ = stuck_in(ns)
        assert api.notebooks[(ns, "nb")]["spec"] == moved["spec"]
        assert api.notebooks[(ns, "nb")]["metadata"]["annotations"] == \
            moved["metadata"]["annotations"]
        assert (ns, "nb-0") in api.pods
    assert len(api.patches) == 1 and len(api.events) == 1
    assert '"rolled_back"' in api.notebooks[(NS, "nb")]["metadata"]["annotations"][
        MIGRATION_ANNOTATION]

    # Opting in later: the next pass acts there too.
    api.namespaces["unlabelled"][ENABLED_LABEL] = "true"
    assert (await pass_over(api, OPT_IN)).get("unlabelled") is ActionKind.ROLLBACK


async def test_cluster_wide_skips_opted_out_and_excluded_namespaces():
    api = api_with({NS: {}, "opted-out": {ENABLED_LABEL: "false"}, "kube-system": {},
                    "gpushift-system": {}, "team-excluded": {ENABLED_LABEL: "true"}})
    # The CLI adds its own --namespace to excluded_namespaces.
    acted = await pass_over(api, CLUSTER_WIDE,
                            ["kube-system", "team-excluded", "gpushift-system"])
    assert acted == {NS: ActionKind.ROLLBACK}
    assert api.namespace_selectors == ["gpushift.io/enabled!=false"]
    assert len(api.patches) == 1


async def test_the_default_is_opt_in():
    api = api_with({NS: {}})
    guard = MigrationGuard(api, CONFIG, clock=lambda: T0 + dt.timedelta(seconds=TIMEOUT + 1),
                           timeout_seconds=TIMEOUT)
    assert await guard.pass_once() == []
    assert not api.patches and not api.deletes and not api.events
