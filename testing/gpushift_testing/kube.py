"""Small helpers for tests that talk to a (local) Kubernetes API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.25,
    describe: Callable[[], Any] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy and return that.

    Exceptions from `check` (an object that does not exist yet) count as "not yet". On
    timeout raise AssertionError naming `what`, the last result and `describe()`.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    state = ""
    if describe is not None:
        try:
            state = f"\nstate: {describe()}"
        except Exception as e:
            state = f"\nstate: <{e!r}>"
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{state}")


def pod_summary(pod: Any) -> dict[str, Any]:
    """The parts of a V1Pod worth printing when a test fails."""
    st = pod.status
    return {
        "name": pod.metadata.name,
        "uid": pod.metadata.uid,
        "node": pod.spec.node_name,
        "phase": st.phase if st else None,
        "conditions": [
            (c.type, c.status, c.reason, c.message) for c in ((st.conditions if st else None) or [])
        ],
        "images": [c.image for c in pod.spec.containers],
    }
