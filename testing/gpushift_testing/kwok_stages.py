"""kwok's Stages as the local control plane uses them (TEST HARNESS; nothing here ships).

kwok plays the kubelet's status updates by Stages. hack/build-controlplane.sh copies
kwok's own defaults (node-initialize, node-heartbeat-with-lease, pod-ready,
pod-complete, pod-delete). One of them, pod-complete, marks a Running pod that a Job
owns Succeeded at once -- nothing ever ran. The control plane uses those defaults with
one change: pods labelled ``RUN_LOCALLY_LABEL=true`` are left out of pod-complete. The
local pod runner runs their containers as processes and sets their phase from the exit
codes (see pod_runner.py), so a Helm hook Job's or `helm test` pod's outcome is its
command's. Tests give the chart's hook pods that label through the chart's
``hookPodLabels`` value; every other pod is played as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RUN_LOCALLY_LABEL = "gpushift-testing-run-locally"
COMPLETE_STAGE = "pod-complete"


def harness_stages(defaults: Path, out: Path) -> Path:
    """Write the stages of `defaults` to `out`, pod-complete leaving out the pods the
    runner completes; returns `out`. ValueError when `defaults` lacks pod-complete."""
    documents: list[dict[str, Any]] = [d for d in yaml.safe_load_all(defaults.read_text())
                                       if d]
    stage = next((d for d in documents if d.get("kind") == "Stage"
                  and (d.get("metadata") or {}).get("name") == COMPLETE_STAGE), None)
    if stage is None:
        raise ValueError(f"{defaults}: no Stage {COMPLETE_STAGE!r} (kwok's defaults changed?)")
    expressions = stage["spec"]["selector"]["matchExpressions"]
    expressions.append({"key": f'.metadata.labels["{RUN_LOCALLY_LABEL}"]',
                        "operator": "DoesNotExist"})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return out
