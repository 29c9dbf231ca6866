"""Resume where you left off after a Kubeflow Stop and Start, from a background
checkpoint (none asked for), end to end on the local control plane: Kubeflow's real
notebook-controller scales the Notebook's StatefulSet to 0 and back, the local pod
runner runs the real sidecar, JupyterLab with gpushift's server extension, real kernels
and kishu, and the test is the user, through the notebook proxy, doing what the front
end does (the dialog itself: Galata, ui-tests/tests/cpu-pod-resume.spec.ts)."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

from gpushift_testing import e2e
from gpushift_testing.kube import wait_for
from test_e2e_moves import (  # the module-scoped webhook and the state the moves use
    CHECK,
    CHECK_ANSWER,
    run,
    session_with_state,
    webhook,
)

__all__ = ["webhook"]

NOTEBOOKS = ("kubeflow.org", "v1")


def set_stopped(admin: Any, nb: e2e.NotebookUnderTest, stopped: bool) -> None:
    """Kubeflow's dashboard Stop / Start: the `kubeflow-resource-stopped` annotation."""
    value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) if stopped else None
    admin.custom.patch_namespaced_custom_object(
        *NOTEBOOKS, nb.namespace, "notebooks", nb.name,
        {"metadata": {"annotations": {"kubeflow-resource-stopped": value}}})


async def background_saved(user: Any, kernel: str, nb: e2e.NotebookUnderTest,
                           timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    query = urllib.parse.urlencode({"kernel_id": kernel})
    while True:
        status, report = await user.gpushift("GET", f"background?{query}")
        assert status == 200, report
        if report["state"] == "saved":
            return dict(report)
        assert report["state"] in ("none", "running"), (report, nb.logs())
        assert time.monotonic() < deadline, (report, nb.logs())
        await asyncio.sleep(0.5)


def test_stop_then_start_offers_the_resume_and_brings_the_variables_back(
        webhook: Any, control_plane: Any, admin: Any, namespace: str, tmp_path: Any) -> None:
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        run(_stop_start(nb, admin))


async def _stop_start(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        # No checkpoint asked for: the server saves the state in the background once
        # the kernel is idle (a few seconds after the cell).
        saved = await background_saved(user, kernel, nb)
    first = admin.core.read_namespaced_pod(f"{nb.name}-0", nb.namespace).metadata.uid

    set_stopped(admin, nb, True)

    def gone() -> bool:
        pods = admin.core.list_namespaced_pod(
            nb.namespace, label_selector=f"notebook-name={nb.name}").items
        return not pods

    wait_for("the notebook's pod gone after Stop", gone, 120)
    set_stopped(admin, nb, False)

    def started_again() -> bool:
        pods = admin.core.list_namespaced_pod(
            nb.namespace, label_selector=f"notebook-name={nb.name}").items
        return any(p.metadata.uid != first and p.status.phase == "Running" for p in pods)

    wait_for("a new pod running after Start", started_again, 180)

    async with nb.user() as user:
        await user.wait_until_up(180)
        kernel = await user.open_notebook("work.ipynb")  # as JupyterLab opens it
        query = urllib.parse.urlencode({"kernel_id": kernel, "path": "work.ipynb"})
        status, offer = await user.gpushift("GET", f"resume?{query}")
        assert status == 200, (offer, nb.logs())
        assert offer["offer"] is True, (offer, nb.logs())
        assert offer["commit_id"] == saved["commit_id"]
        assert {"big", "frame", "model", "digest"} <= set(offer["variables"]), offer
        status, resumed = await user.gpushift("POST", "resume", {
            "kernel_id": kernel, "path": "work.ipynb", "commit_id": offer["commit_id"]})
        assert status == 200 and resumed["ok"] is True, (resumed, nb.logs())
        check = await user.execute(kernel, CHECK)
        assert check.results == [CHECK_ANSWER], check
        # Not offered again: this kernel has its state (and has now run a cell).
        status, again = await user.gpushift("GET", f"resume?{query}")
        assert status == 200 and again["offer"] is False, again
