"""The status of a pod that ran to completion, as a kubelet reports it (pure; TEST
HARNESS, part of the local pod runner, see pod_runner.py).

kwok marks pods Running; for a pod that runs to completion (restartPolicy Never or
OnFailure: a Job's pod, a `helm test` pod) that kwok leaves to the runner
(kwok_stages.RUN_LOCALLY_LABEL), the runner reports the end itself: phase Succeeded
when every container exited 0, else Failed, and a terminated containerStatus per
container with its exit code -- what the Job controller and `helm test` read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def _rfc3339(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def completed_status(pod: Mapping[str, Any], exits: Mapping[str, int],
                     started: Mapping[str, float], finished: Mapping[str, float]
                     ) -> dict[str, Any]:
    """The `status` patch of `pod` whose containers exited with `exits` (name -> exit
    code), started and finished at those times (time.time())."""
    succeeded = all(code == 0 for code in exits.values())
    statuses = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        name = str(container["name"])
        code = exits.get(name, 0)
        statuses.append({
            "name": name, "image": str(container.get("image", "")), "ready": False,
            "started": False, "restartCount": 0,
            "state": {"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": _rfc3339(started.get(name, 0.0)),
                "finishedAt": _rfc3339(finished.get(name, 0.0))}}})
    now = _rfc3339(max(finished.values(), default=0.0))
    reason = "PodCompleted" if succeeded else "PodFailed"
    return {
        "phase": "Succeeded" if succeeded else "Failed",
        "containerStatuses": statuses,
        "conditions": [{"type": kind, "status": "False", "reason": reason,
                        "lastTransitionTime": now} for kind in ("Ready", "ContainersReady")],
    }
