"""The chart's PrometheusRule (`metrics.prometheusRule`): rendered with helm, checked with
`promtool check rules` and unit-tested with `promtool test rules` — each alert fires on
the series that mean trouble and stays silent on healthy ones, with the labels an admin
routes on and its annotations filled in."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from chart_rendering import NAMESPACE, RELEASE, all_of, one, promtool, render

JOB = f'job="{RELEASE}-webhook",namespace="{NAMESPACE}"'
TARGET = {"job": f"{RELEASE}-webhook", "namespace": NAMESPACE, "pod": "webhook-0"}
ALERT_LABELS = {"team": "ml-platform"}


def rule_groups() -> list[dict[str, Any]]:
    docs = render("metrics.prometheusRule.enabled=true",
                  set_json=(f"metrics.prometheusRule.alertLabels={ALERT_LABELS}".replace(
                      "'", '"'),))
    return list(one(docs, "PrometheusRule")["spec"]["groups"])


def rules_by_alert() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups() for r in g["rules"]}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alert as promtool reports it: the series' labels, the rule's, ours; the
    annotations with `$labels` filled in."""
    rule = rules_by_alert()[alert]
    annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v)
                   for k, v in rule["annotations"].items()}
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}


def case(alert: str, eval_time: str, input_series: list[dict[str, str]],
         fired: list[dict[str, str]]) -> dict[str, Any]:
    return {"interval": "1m", "input_series": input_series, "alert_rule_test": [{
        "eval_time": eval_time, "alertname": alert,
        "exp_alerts": [expected(alert, labels) for labels in fired]}]}


def loop(name: str) -> dict[str, str]:
    return {**TARGET, "loop": name}


CASES = [
    # No webhook scraped as up for 5 minutes; one that is up raises nothing.
    case("GpushiftWebhookDown", "10m", [series("up", TARGET, "0x15")], [{}]),
    case("GpushiftWebhookDown", "10m", [series("up", TARGET, "1x15")], []),
    # The API server admitted a pod without asking the webhook.
    case("GpushiftWebhookFailingOpen", "5m", [series(
        "apiserver_admission_webhook_fail_open_count",
        {"name": "pods.gpushift.io", "rejection_code": "0"}, "0 0 1 1 1 1")], [{}]),
    case("GpushiftWebhookFailingOpen", "5m", [series(
        "apiserver_admission_webhook_fail_open_count",
        {"name": "pods.gpushift.io", "rejection_code": "0"}, "1x6")], []),
    # A certificate 3 days from expiry (the default warns at 7), for an hour; 30 days: fine.
    case("GpushiftCertificateExpiringSoon", "90m", [series(
        "gpushift_webhook_certificate_expiry_timestamp_seconds", TARGET,
        f"{3 * 86400}x100")], [TARGET]),
    case("GpushiftCertificateExpiringSoon", "90m", [series(
        "gpushift_webhook_certificate_expiry_timestamp_seconds", TARGET,
        f"{30 * 86400}x100")], []),
    # The guard loop's last pass stays at time 0 with a 60 s deadline; the lease loop
    # completes a pass every minute.
    case("GpushiftLoopStalled", "10m", [
        series("gpushift_loop_last_pass_timestamp_seconds", loop("guard"), "0x15"),
        series("gpushift_loop_deadline_seconds", loop("guard"), "60x15"),
        series("gpushift_loop_last_pass_timestamp_seconds", loop("lease"), "0+60x15"),
        series("gpushift_loop_deadline_seconds", loop("lease"), "60x15"),
    ], [loop("guard")]),
    case("GpushiftLoopRestarting", "20m", [
        series("gpushift_loop_restarts_total", loop("certificates"), "0 1 2 3 4 5 6x15"),
        series("gpushift_loop_restarts_total", loop("guard"), "1x20"),
    ], [loop("certificates")]),
    # Six rollbacks for lack of GPUs in an hour (more than the default 5); one for an
    # image pull.
    case("GpushiftMovesRollingBack", "60m", [
        series("gpushift_webhook_guard_rollbacks_total",
               {**TARGET, "reason": "insufficient_resources"}, "0+0.1x60"),
        series("gpushift_webhook_guard_rollbacks_total",
               {**TARGET, "reason": "image_pull"}, "0 1x60"),
    ], [{"reason": "insufficient_resources"}]),
    # team-a's notebook held its GPU for 3 hours without GPU work (the default: 2h);
    # team-b's held one as long, busy now and then; team-c's held one for an hour only.
    case("GpushiftGpuHeldIdle", "180m", [
        *(series("gpushift_gpu_held_seconds_total",
                 {**TARGET, "pod": pod, "namespace": ns, "notebook": "nb", "profile": "t4"},
                 values)
          for pod in ("webhook-0", "webhook-1")
          for ns, values in (("team-a", "0+60x180"), ("team-b", "0+60x180"),
                             ("team-c", "0x120 0+60x60"))),
        series("gpushift_gpu_busy_seconds_total",
               {**TARGET, "namespace": "team-b", "notebook": "nb", "profile": "t4"},
               "0+5x180"),
    ], [{"job": TARGET["job"], "namespace": "team-a", "notebook": "nb", "profile": "t4"}]),
    case("GpushiftMovesFailing", "30m", [series(
        "gpushift_webhook_guard_failed_migrations_total",
        {**TARGET, "reason": "not_ready"}, "0 0 0 1x30")], [{"reason": "not_ready"}]),
]


def test_every_alert_has_a_case_that_fires_it():
    alerts = set(rules_by_alert())
    assert alerts == {c["alert_rule_test"][0]["alertname"] for c in CASES}
    for c in CASES:
        assert c["alert_rule_test"][0]["alertname"] in alerts


def test_the_rules_pass_promtool_check_and_their_unit_tests(tmp_path: Path):
    rules = tmp_path / "gpushift-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    checked = subprocess.run([str(promtool()), "check", "rules", str(rules)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unit = tmp_path / "gpushift-rules-test.yaml"
    unit.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m",
                                    "tests": CASES}, sort_keys=False))
    tested = subprocess.run([str(promtool()), "test", "rules", str(unit)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_off_by_default_and_selecting_the_webhook_scrape():
    assert all_of(render(), "PrometheusRule") == []
    rules = rules_by_alert()
    for name, rule in rules.items():
        assert rule["labels"]["team"] == "ml-platform", name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        if "gpushift_gpu_" in rule["expr"]:  # the notebooks' namespaces (honorLabels)
            assert f'{{job="{RELEASE}-webhook"}}' in rule["expr"], (name, rule["expr"])
        elif "gpushift_" in rule["expr"] or "up{" in rule["expr"]:
            assert JOB in rule["expr"], (name, rule["expr"])
