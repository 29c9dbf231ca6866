"""`gpushift-report`: GPU-hours held, busy and given back, from Prometheus
(`--prometheus URL`) or, without it, what the cluster shows now (`--from-cluster`).

(Not `gpushift report`: `gpushift` is the notebook side's command, `gpushift scan`.)

Errors an admin can fix (a bad --since, an unreachable Prometheus or API server, a bad
config file) end with one line on stderr and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gpushift_core.kube import KubeApi, KubeError, Retry
from gpushift_webhook.config import ConfigError, WebhookConfig, load_config
from gpushift_webhook.report import MAX_STEPS, Window, build_report, parse_span
from gpushift_webhook.report_cluster import read_notebooks
from gpushift_webhook.report_now import ClusterFacts, holder_now, now_data, now_table
from gpushift_webhook.report_prometheus import (
    PrometheusError,
    PrometheusSettings,
    fetch_recorded,
)
from gpushift_webhook.report_text import report_data, report_table

__all__ = ["main"]

USAGE_ERROR = 2


class UsageError(ValueError):
    """Bad input on the command line: said in one line."""


@dataclass(frozen=True)
class PrometheusReportSettings:
    """The report from Prometheus, as the command line asks for it."""

    prometheus: PrometheusSettings
    """Where Prometheus is."""
    since_seconds: int
    """Length of the window, ending now."""
    step_seconds: int
    """Resolution of idle gaps (and of the query)."""
    idle_timeouts: Sequence[int]
    """Timeouts (seconds) whose give-back is estimated."""
    top: int
    """How many idle holders to list."""


def _parser() -> argparse.ArgumentParser:
    report = argparse.ArgumentParser(
        prog="gpushift-report",
        description="GPU-hours held, busy and given back per namespace; the top idle "
                    "holders; what other idle timeouts would have given back. Or, "
                    "without Prometheus, who holds a GPU now and how long it sat idle.")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL",
                        help="Prometheus that scrapes the webhook, e.g. http://prometheus:9090")
    source.add_argument("--from-cluster", action="store_true",
                        help="no Prometheus: read the Notebooks and Events now "
                             "(kubeconfig, or the pod's ServiceAccount)")
    report.add_argument("--since", default="7d",
                        help="window ending now: 7d, 24h, 90m, 3600 (default 7d)")
    report.add_argument("--step", default="60s",
                        help="step of the range query, the resolution of idle gaps "
                             "(default 60s; no shorter than Prometheus' scrape interval)")
    report.add_argument("--idle-timeout", action="append", default=[], metavar="DURATION",
                        help="estimate what this idle timeout would have given back "
                             "(repeatable: --idle-timeout 10m --idle-timeout 30m)")
    report.add_argument("--top", type=int, default=10, help="idle holders listed (default 10)")
    report.add_argument("--selector", default="",
                        help="extra label matchers, e.g. 'job=\"gpushift-webhook\"'")
    report.add_argument("--timeout", type=float, default=30.0,
                        help="seconds per request to Prometheus or the API server")
    report.add_argument("--kubeconfig", help="kubeconfig file (--from-cluster)")
    report.add_argument("--namespace", action="append", default=[],
                        help="only this namespace (--from-cluster; repeatable)")
    report.add_argument("--config", help="the webhook's config YAML (the chart's ConfigMap: "
                                         "GPU resources, profiles, idle settings) for "
                                         "--from-cluster; default: gpushift's defaults")
    report.add_argument("--json", action="store_true", help="JSON instead of tables")
    return report


def _span(flag: str, text: str) -> int:
    seconds = parse_span(text)
    if seconds is None:
        raise UsageError(f"{flag} {text!r}: not a duration like 7d, 24h, 30m, 90s or 3600")
    return seconds


def prometheus_settings(args: argparse.Namespace) -> PrometheusReportSettings:
    step = _span("--step", args.step)
    since = _span("--since", args.since)
    if since < step:
        raise UsageError(f"--since {args.since} is shorter than --step {args.step}")
    if since // step > MAX_STEPS:
        raise UsageError(f"--since {args.since} at --step {args.step} is more than "
                         f"{MAX_STEPS} steps: use a longer --step")
    if args.top < 0:
        raise UsageError("--top must not be negative")
    return PrometheusReportSettings(
        PrometheusSettings(args.prometheus, args.timeout, args.selector), since, step,
        [_span("--idle-timeout", t) for t in args.idle_timeout], args.top)


def report_from_prometheus(settings: PrometheusReportSettings, *, as_json: bool,
                           now: float) -> str:
    window = Window.ending(now, settings.since_seconds, settings.step_seconds)
    recorded = fetch_recorded(settings.prometheus, window)
    report = build_report(recorded, settings.idle_timeouts, settings.top)
    if as_json:
        return json.dumps(report_data(report), indent=2) + "\n"
    return report_table(report)


def cluster_facts(config_path: str | None) -> ClusterFacts:
    config = load_config(config_path) if config_path else WebhookConfig()
    return ClusterFacts(config.gpu_resources, config.profiles, config.idle,
                        config_path or "gpushift's defaults (no --config)")


async def report_from_cluster(args: argparse.Namespace, *, now: float) -> str:
    facts = cluster_facts(args.config)
    # One try's worth of patience: an admin at a terminal wants the error, not a minute
    # of retries.
    retry = Retry(deadline_seconds=0, connect_timeout_seconds=min(args.timeout, 10.0),
                  read_timeout_seconds=args.timeout)
    api = KubeApi.connect(args.kubeconfig, retry=retry, component="gpushift-report")
    try:
        objects = await read_notebooks(api, args.namespace)
    finally:
        api.close()
    holders = [holder_now(o, facts, now) for o in objects]
    if args.json:
        return json.dumps(now_data(holders, facts), indent=2) + "\n"
    return now_table(holders, facts, now)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.from_cluster:
            out = asyncio.run(report_from_cluster(args, now=time.time()))
        else:
            out = report_from_prometheus(prometheus_settings(args), as_json=args.json,
                                         now=time.time())
    except (UsageError, PrometheusError, ConfigError) as exc:
        # One line: YAML's errors, for one, span several with a caret under the column.
        print(f"gpushift-report: {_one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KubeError as exc:
        print(f"gpushift-report: the Kubernetes API failed: {_one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:  # kubeconfig missing or broken, and the like: no traceback
        print(f"gpushift-report: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


if __name__ == "__main__":
    raise SystemExit(main())
