"""Reads the webhook's GPU-hours counters from Prometheus' HTTP query API for
`gpushift-report` (transport only: `report` computes).

One range query per counter (`/api/v1/query_range`) of the raw series, every replica's
on its own (the report takes their max itself), sampled at the report's step from the
window's start to its end. Prometheus answers at most 11,000 points per series, so a
long window is asked for in chunks (`PrometheusSettings.points_per_query`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from gpushift_webhook.report import (
    BUSY_METRIC,
    HELD_METRIC,
    RECLAIMED_METRIC,
    Recorded,
    Series,
    Window,
)

__all__ = ["PrometheusError", "PrometheusSettings", "fetch_recorded"]


class PrometheusError(RuntimeError):
    """Prometheus could not be asked or did not answer a query: one line, for the admin."""


@dataclass(frozen=True)
class PrometheusSettings:
    """Where and how to ask Prometheus."""

    url: str
    """Base URL of Prometheus (or of a proxy to its API), e.g. http://prometheus:9090."""
    timeout_seconds: float = 30.0
    """Per HTTP request."""
    selector: str = ""
    """Extra label matchers for every series, e.g. 'job="gpushift-webhook"' when several
    installations share a Prometheus."""
    points_per_query: int = 10_000
    """Samples per series asked for in one range query: under Prometheus' limit of
    11,000; a longer window is asked for in several."""


def fetch_recorded(settings: PrometheusSettings, window: Window) -> Recorded:
    """The three counters over `window` (busy: empty when no webhook serves it)."""
    return Recorded(window,
                    held=_range(settings, HELD_METRIC, window),
                    busy=_range(settings, BUSY_METRIC, window),
                    reclaimed=_range(settings, RECLAIMED_METRIC, window))


def _range(settings: PrometheusSettings, metric: str, window: Window) -> list[Series]:
    query = f"{metric}{{{settings.selector}}}" if settings.selector else metric
    samples: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
    # Sample indexes 0..steps (index 0 at the start: the baseline of the first step).
    first = 0
    while first <= window.steps:
        last = min(window.steps, first + settings.points_per_query - 1)
        result = _get(settings, "/api/v1/query_range", {
            "query": query, "start": _num(window.start + first * window.step),
            "end": _num(window.start + last * window.step), "step": str(window.step)})
        for item in _matrix(result):
            labels = tuple(sorted((str(k), str(v)) for k, v in item["metric"].items()
                                  if k != "__name__"))
            values = samples.setdefault(labels, {})
            for stamp, value in item.get("values") or []:
                index = round((float(stamp) - window.start) / window.step)
                values[index] = float(value)
        first = last + 1
    return [Series(dict(labels), values) for labels, values in samples.items()]


def _matrix(data: dict[str, Any]) -> list[dict[str, Any]]:
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise PrometheusError("Prometheus answered a range query without a matrix")
    return [r for r in data["result"] if isinstance(r, dict)
            and isinstance(r.get("metric"), dict)]


def _get(settings: PrometheusSettings, path: str, params: dict[str, str]) -> dict[str, Any]:
    url = settings.url.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PrometheusError(f"--prometheus {settings.url!r}: not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=settings.timeout_seconds) as answer:  # noqa: S310 (scheme checked above)
            body = answer.read()
    except urllib.error.HTTPError as exc:
        # Prometheus answers bad queries with 400/422 and a JSON error: say its words.
        body = exc.read()
        detail = _error_of(body) or f"HTTP {exc.code}"
        raise PrometheusError(f"Prometheus at {settings.url} refused the query: "
                              f"{detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(f"cannot reach Prometheus at {settings.url}: "
                              f"{reason}") from None
    try:
        parsed = json.loads(body)
    except ValueError:
        raise PrometheusError(f"{settings.url} did not answer JSON: is it Prometheus' "
                              "API?") from None
    if not isinstance(parsed, dict) or parsed.get("status") != "success":
        detail = _error_of(body) or "no status"
        raise PrometheusError(f"Prometheus at {settings.url} failed the query: {detail}")
    data = parsed.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(f"Prometheus at {settings.url} answered without data")
    return data


def _error_of(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("error"):
        return f"{parsed.get('errorType', 'error')}: {parsed['error']}"
    return None


def _num(value: float) -> str:
    return f"{value:.3f}"
