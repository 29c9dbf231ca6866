"""The report from Prometheus (`report.Report`) as an aligned plain-text table or as JSON
data (pure). GPU-hours in both; "n/a" (JSON null) where busy data is missing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from gpushift_webhook.report import Report, duration_text, hours

__all__ = ["report_data", "report_table", "table"]


def table(header: Sequence[str], rows: Sequence[Sequence[str]],
          text_columns: Sequence[int] = (0,)) -> list[str]:
    """Columns padded to their widest cell, like `kubectl get`'s plain output: the
    `text_columns` left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [c.ljust(w) if i in text_columns else c.rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _h(seconds: float | None) -> str:
    value = hours(seconds)
    return "n/a" if value is None else f"{value:.2f}"


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def report_table(report: Report) -> str:
    w = report.window
    lines = [f"GPU-hours from {_when(w.start)} to {_when(w.end)} "
             f"({duration_text(w.end - w.start)}, step {w.step}s)", ""]
    rows = [[n.namespace, _h(n.held), _h(n.busy), _h(n.idle), _h(n.reclaimed)]
            for n in report.namespaces]
    if rows:
        rows.append(["TOTAL", _h(sum(n.held for n in report.namespaces)),
                     _h(_sum_known([n.busy for n in report.namespaces])),
                     _h(_sum_known([n.idle for n in report.namespaces])),
                     _h(report.recorded_reclaimed)])
        lines += table(["NAMESPACE", "HELD", "BUSY", "IDLE", "RECLAIMED"], rows)
    else:
        lines.append("No GPU held in the window.")
    lines += ["", "Top idle holders (GPU-hours held without GPU work):"]
    if not report.busy_available:
        lines.append("  n/a: no busy data (see notes)")
    elif report.top_idle:
        lines += ["  " + x for x in table(
            ["NAMESPACE/NOTEBOOK", "IDLE", "HELD", "BUSY", "RECLAIMED"],
            [[f"{n.namespace}/{n.notebook}", _h(n.idle), _h(n.held), _h(n.busy),
              _h(n.reclaimed)] for n in report.top_idle])]
    else:
        lines.append("  none")
    if report.what_if:
        lines += ["", "What other idle timeouts would have given back (GPU-hours):"]
        rows = [["in force (recorded)", _h(report.recorded_reclaimed)]]
        rows += [[f"idle timeout {duration_text(o.timeout)}",
                  _h(o.given_back) if report.busy_available else "n/a"]
                 for o in report.what_if]
        lines += ["  " + x for x in table(["TIMEOUT", "GIVEN BACK"], rows)]
    lines += ["", "Notes:", *(f"- {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def _sum_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def report_data(report: Report) -> dict[str, Any]:
    """The report as JSON data: GPU-hours (4 decimals), null where unknown."""
    w = report.window
    return {
        "window": {"start": w.start, "end": w.end, "stepSeconds": w.step},
        "busyAvailable": report.busy_available,
        "namespaces": [{"namespace": n.namespace, "heldGpuHours": hours(n.held),
                        "busyGpuHours": hours(n.busy), "idleGpuHours": hours(n.idle),
                        "reclaimedGpuHours": hours(n.reclaimed),
                        "heldWithoutBusyDataGpuHours": hours(n.held_without_busy)}
                       for n in report.namespaces],
        "topIdle": [{"namespace": n.namespace, "notebook": n.notebook,
                     "idleGpuHours": hours(n.idle), "heldGpuHours": hours(n.held),
                     "busyGpuHours": hours(n.busy), "reclaimedGpuHours": hours(n.reclaimed)}
                    for n in report.top_idle],
        "recordedReclaimedGpuHours": hours(report.recorded_reclaimed),
        "whatIf": [{"idleTimeoutSeconds": o.timeout,
                    "givenBackGpuHours": hours(o.given_back) if report.busy_available
                    else None,
                    "byNamespace": {ns: hours(v) for ns, v in sorted(o.by_namespace.items())}}
                   for o in report.what_if],
        "notes": list(report.notes),
    }
