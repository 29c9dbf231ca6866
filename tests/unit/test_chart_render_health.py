"""The chart's health values: the loops' deadlines reach the webhook's CLI as its own
parser reads them, the liveness probe on /healthz takes its period and threshold from
the values, readiness stays on /readyz, and the schema refuses a deadline under 10 s."""

from __future__ import annotations

import pytest
from chart_rendering import CHART, chart_values, render, run_helm, webhook_container
from test_chart_render_webhook import _run_cli


def test_loop_deadlines_reach_the_webhook_cli(tmp_path, monkeypatch):
    defaults = chart_values()["health"]["loopDeadlineSeconds"]
    assert defaults == {"guard": 300, "lease": 300, "certificates": 600, "notebooks": 300,
                        "serverTypes": 300, "capacity": 300}
    _, args = _run_cli(render(), tmp_path, monkeypatch)
    assert (args.guard_deadline, args.lease_deadline, args.cert_deadline,
            args.notebooks_deadline, args.server_types_deadline,
            args.capacity_deadline) == (300, 300, 600, 300, 300, 300)
    docs = render("health.loopDeadlineSeconds.guard=45", "health.loopDeadlineSeconds.lease=40",
                  "health.loopDeadlineSeconds.certificates=900",
                  "health.loopDeadlineSeconds.notebooks=70",
                  "health.loopDeadlineSeconds.serverTypes=50",
                  "health.loopDeadlineSeconds.capacity=60")
    _, args = _run_cli(docs, tmp_path, monkeypatch)
    assert (args.guard_deadline, args.lease_deadline, args.cert_deadline,
            args.notebooks_deadline, args.server_types_deadline,
            args.capacity_settings.deadline_seconds) == (45, 40, 900, 70, 50, 60)


def test_liveness_probe_on_healthz_takes_its_timing_from_the_values():
    c = webhook_container(render("health.livenessPeriodSeconds=15",
                                 "health.livenessFailureThreshold=4"))
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["httpGet"]["path"] == "/healthz" and ready["httpGet"]["path"] == "/readyz"
    assert (live["periodSeconds"], live["failureThreshold"]) == (15, 4)
    defaults = webhook_container(render())["livenessProbe"]
    assert (defaults["periodSeconds"], defaults["failureThreshold"]) == (10, 3)


@pytest.mark.parametrize("bad", ["health.loopDeadlineSeconds.guard=5",
                                 "health.livenessFailureThreshold=0", "health.typo=1"])
def test_schema_refuses_bad_health_values(bad):
    proc = run_helm("template", "gpushift", str(CHART), "--set", bad)
    assert proc.returncode != 0 and "health" in proc.stderr, proc.stderr
