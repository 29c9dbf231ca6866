"""The chart's Grafana dashboard (`metrics.grafanaDashboard`): a ConfigMap for Grafana's
dashboard sidecar; every query names only series the webhook really serves (read from its
own registry), is PromQL that promtool accepts, and — for the GPU-hours panels — answers
what the panel's title says on series from two replicas (the max over replicas, never
their sum), checked with `promtool test rules`. The ServiceMonitor keeps the metrics' own
`namespace` label, which those panels group by."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from chart_rendering import NAMESPACE, RELEASE, all_of, one, promtool, render
from prometheus_client import CollectorRegistry

from gpushift_core.gpu_activity import GpuActivity
from gpushift_webhook.gpu_hours import GpuHours
from gpushift_webhook.gpu_hours_metrics import GpuHoursCollector
from gpushift_webhook.metrics import WebhookMetrics

DASHBOARD = f"{RELEASE}-dashboard"
JOB = f"{RELEASE}-webhook"
# Grafana's variables as a scrape of this chart's webhook would fill them.
VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$job": JOB, "$namespace": ".*"}


def dashboard(*sets: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cm = one(render("metrics.grafanaDashboard.enabled=true", *sets), "ConfigMap", DASHBOARD)
    return cm, json.loads(cm["data"]["gpushift.json"])


def queries(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of the dashboard, by panel title (and the variables')."""
    found = {f"{p['title']} {t['refId']}": t["expr"] for p in board["panels"]
             for t in p.get("targets", [])}
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            found[f"${var['name']}"] = re.sub(r"^label_values\((.*), \w+\)$", r"\1",
                                              var["query"]["query"])
    return found


def filled(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


def served_series() -> set[str]:
    """The names of the series the webhook serves, from its own registry with every
    labelled family holding a value."""
    metrics = WebhookMetrics()
    metrics.loop_restarts.labels("guard").inc()
    metrics.reviews.labels("allowed").inc()
    metrics.guard_rollbacks.labels("insufficient_resources").inc()
    hours = GpuHours(("nvidia.com/gpu",))
    registry = CollectorRegistry()
    registry.register(GpuHoursCollector(hours))
    notebook = {"metadata": {"namespace": "team", "name": "nb", "annotations": {
        "gpushift.io/notebook-migration": json.dumps(
            {"id": "m", "phase": "done", "target": "cpu", "trigger": "idle",
             "phases": {"checkpointing": 1.5}})}},
        "spec": {"template": {"spec": {"containers": [{"name": "nb"}]}}},
        "status": {"readyReplicas": 1}}
    hours.observe(("team", "nb"), {**notebook, "metadata": {"namespace": "team",
                                                            "name": "nb"}}, 0)
    hours.observe(("team", "nb"), notebook, 1)
    gpu = json.loads(json.dumps(notebook))
    gpu["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": "1"}}
    hours.observe(("team", "other"), {**gpu, "metadata": {"namespace": "team",
                                                          "name": "other"}}, 0)
    hours.observe(("team", "other"), {**gpu, "metadata": {
        "namespace": "team", "name": "other", "annotations": {
            "gpushift.io/notebook-gpu-activity": GpuActivity("p", 2.0, 1.0, 1.0)
            .to_annotation()}}}, 1)
    return {s.name for reg in (metrics.registry, registry) for family in reg.collect()
            for s in family.samples}


def test_off_by_default_and_a_configmap_for_the_sidecar_when_on():
    assert not [cm for cm in all_of(render(), "ConfigMap")
                if cm["metadata"]["name"] == DASHBOARD]
    cm, board = dashboard()
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["uid"] == "gpushift-gpu-hours" and board["panels"]
    moved, _ = dashboard("metrics.grafanaDashboard.namespace=monitoring",
                         "metrics.grafanaDashboard.annotations.grafana_folder=GPUs")
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "GPUs"}


def test_the_service_monitor_keeps_the_notebook_namespace_label():
    docs = render("metrics.serviceMonitor.enabled=true")
    [endpoint] = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


def test_every_query_names_only_series_the_webhook_serves():
    served = served_series()
    _, board = dashboard()
    for title, expr in queries(board).items():
        names = set(re.findall(r"\bgpushift_[a-z_]+", expr))
        assert names, f"{title}: no gpushift series in {expr}"
        assert names <= served, f"{title}: {sorted(names - served)} not served"


def test_every_query_is_promql_promtool_accepts(tmp_path: Path):
    _, board = dashboard()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": filled(expr)}
        for i, expr in enumerate(queries(board).values())]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([str(promtool()), "check", "rules", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def panel_query(board: dict[str, Any], title: str) -> str:
    [panel] = [p for p in board["panels"] if p["title"] == title]
    return filled(panel["targets"][0]["expr"])


def replicas(name: str, labels: str, values: str) -> list[dict[str, str]]:
    """The same series as two webhook replicas serve it (each counts on its own)."""
    return [{"series": f'{name}{{job="{JOB}",pod="webhook-{r}",{labels}}}',
             "values": values} for r in (0, 1)]


def test_the_gpu_hours_panels_answer_what_their_titles_say(tmp_path: Path):
    _, board = dashboard()
    held = "gpushift_gpu_held_seconds_total"
    # Two GPUs held by team-a's notebook all hour (120 GPU-seconds a minute), one by
    # team-b's for the last half hour; an idle move gave one GPU back to team-b for an hour.
    series = [
        *replicas(held, 'namespace="team-a",notebook="train",profile="a100x2"',
                  "0+120x60"),
        *replicas(held, 'namespace="team-b",notebook="eda",profile="t4"',
                  "0x29 0+60x30"),
        # team-a's notebook did GPU work on one GPU's worth all hour; team-b's none.
        *replicas("gpushift_gpu_busy_seconds_total",
                  'namespace="team-a",notebook="train",profile="a100x2"', "0+60x60"),
        # Moves to CPU whose new pod took between 1 and 2 s to start, one a minute.
        *(r for le, values in (("1", "0x60"), ("2", "0+1x60"), ("+Inf", "0+1x60"))
          for r in replicas("gpushift_move_phase_duration_seconds_bucket",
                            f'target="cpu",phase="recreating",le="{le}"', values)),
        *replicas("gpushift_gpu_reclaimed_seconds_total",
                  'namespace="team-b",notebook="old"', "0+60x60"),
        *replicas("gpushift_gpu_notebooks_holding", 'namespace="team-a",profile="a100x2"',
                  "1x60"),
        *replicas("gpushift_gpu_notebooks_holding", 'namespace="team-b",profile="t4"',
                  "0x30 1x30"),
    ]
    tests = [
        (panel_query(board, "GPU-hours held"), [{"labels": "{}", "value": 2.5}]),
        (panel_query(board, "GPU-hours given back by idle moves"),
         [{"labels": "{}", "value": 1}]),
        (panel_query(board, "Notebooks holding a GPU now"), [{"labels": "{}", "value": 2}]),
        (panel_query(board, "GPUs held, by namespace"),
         [{"labels": '{namespace="team-a"}', "value": 2},
          {"labels": '{namespace="team-b"}', "value": 1}]),
        (panel_query(board, "Top GPU holders"),
         [{"labels": '{namespace="team-a",notebook="train",profile="a100x2"}', "value": 2},
          {"labels": '{namespace="team-b",notebook="eda",profile="t4"}', "value": 0.5}]),
        (panel_query(board, "GPU-hours busy"), [{"labels": "{}", "value": 1}]),
        (panel_query(board, "GPU-hours held idle"), [{"labels": "{}", "value": 1.5}]),
        (panel_query(board, "Top idle GPU holders"),
         [{"labels": '{namespace="team-a",notebook="train",profile="a100x2"}', "value": 1},
          {"labels": '{namespace="team-b",notebook="eda",profile="t4"}', "value": 0.5}]),
        (panel_query(board, "Move phase times (p90), by target and phase"),
         [{"labels": '{phase="recreating",target="cpu"}', "value": 1.9}]),
    ]
    unit = tmp_path / "dashboard-test.yaml"
    unit.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": expr, "eval_time": "60m", "exp_samples": samples}
                             for expr, samples in tests]}]}))
    tested = subprocess.run([str(promtool()), "test", "rules", str(unit)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
