"""The migration guard's pure part for a stopped Notebook: the JSON patch of a CANCEL or
TO_CPU (`gpushift_webhook.guard_decision.decide` says which), and `action_patch`, the
patch of any action the guard carries out by patching the Notebook. No I/O here.

`stop_patch(notebook, action, now)` is ONE JSON patch of the Notebook (first a `test` of
its resourceVersion): when the spec holds a GPU and has a previous-profile record, the
previous profile put back (`plan_move(notebook, "cpu", previous=<record>)`) and the record
removed; for CANCEL the migration annotation in phase `cancelled` with the reason (same
id). It touches no other annotation: Kubeflow's culler keeps its own clock
(`notebooks.kubeflow.org/last-activity`, `..._check_timestamp`) and Start removes the
stop annotation, not gpushift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from gpushift_core.labels import PREVIOUS_PROFILE_ANNOTATION
from gpushift_core.patches import PatchBuilder
from gpushift_core.rollback_record import read_previous_profile
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.guard_decision import (
    CANCELLED,
    REASON_MAX,
    Action,
    ActionKind,
    RollbackPatch,
    cpu_spec,
    guarded_ops,
    holds_gpu,
    notebook_pod_spec,
    rollback_patch,
    set_mirror,
)

__all__ = ["action_patch", "stop_patch"]


def action_patch(notebook: Mapping[str, Any], action: Action, now: dt.datetime,
                 config: WebhookConfig | None = None) -> RollbackPatch | None:
    """The JSON patch of a ROLLBACK/FAIL (`rollback_patch`) or CANCEL/TO_CPU
    (`stop_patch`) action; None for the others."""
    if action.kind in (ActionKind.ROLLBACK, ActionKind.FAIL):
        return rollback_patch(notebook, action, now, config)
    if action.kind in (ActionKind.CANCEL, ActionKind.TO_CPU):
        return stop_patch(notebook, action, now, config)
    return None


def stop_patch(notebook: Mapping[str, Any], action: Action, now: dt.datetime,
               config: WebhookConfig | None = None) -> RollbackPatch:
    """The one JSON patch that carries out a CANCEL or TO_CPU `action` on a stopped
    `notebook` (kind CANCEL/TO_CPU; `summary` "" when the spec was left as it is, e.g.
    its record could not be planned: `reason` then says why). Its operations are [] when
    there is nothing to write."""
    if action.kind not in (ActionKind.CANCEL, ActionKind.TO_CPU):
        raise ValueError(f"not a stop: {action.kind}")
    cfg = config or WebhookConfig()
    spec_ops: list[dict[str, Any]] = []
    summary, reason = "", action.reason
    pb = PatchBuilder(notebook)
    if holds_gpu(notebook_pod_spec(notebook), cfg.gpu_resources) \
            and read_previous_profile(notebook) is not None:
        spec_ops, summary, error = cpu_spec(notebook, cfg)
        if error is None:
            pb.remove(("metadata", "annotations", PREVIOUS_PROFILE_ANNOTATION))
        else:
            reason = (f"{reason}; " if reason else "") + \
                f"the CPU profile could not be restored: {error}"
    record_out: dict[str, Any] = {}
    m = action.migration
    if action.kind is ActionKind.CANCEL and m is not None:
        record_out = set_mirror(pb, m, CANCELLED, now, reason)
    if not spec_ops and not pb.operations:
        return RollbackPatch(action.kind, [], record_out, reason, summary)
    return RollbackPatch(action.kind, guarded_ops(notebook, spec_ops, pb), record_out,
                         reason[:REASON_MAX], summary)
