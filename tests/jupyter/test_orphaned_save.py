"""A move whose notebooks were being saved when the notebook server died (killed, out of
memory): the restarted server's kernels are fresh, nothing of the old ones can be saved
any more. The new server ends the move at once, with the reason, instead of leaving it
to the sidecar's save deadline (10 minutes by default).

The real sidecar process took the move before this Jupyter server started (as it would
have from the server that died); the real in-process server with the extension's loop on.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

# pytest-jupyter's fixtures, in this module only (see test_server_extension).
import pytest
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_server_extension import (  # the fixtures too, shared with that module
    kishu_root,
    on_server_loop,
    server_config,
    sidecar,
    wait_for_phase,
)

__all__ = ["kishu_root", "sidecar"]


def accepted_by_a_server_that_died(sidecar: Any) -> dict[str, Any]:
    """The move as the dead server's `/migrate` left it: taken, checkpoints to come."""
    request = urllib.request.Request(
        sidecar.url + "/migrations", method="POST",
        data=json.dumps({"target": "gpu", "reason": "manual", "checkpoint": None,
                         "checkpoints_to_come": True}).encode(),
        headers={**sidecar.auth(), "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
        return dict(json.loads(answer.read()))


@pytest.fixture
def jp_server_config(sidecar: Any, kishu_root: Path) -> dict[str, Any]:
    sidecar.orphan = accepted_by_a_server_that_died(sidecar)  # before the server starts
    return server_config(sidecar, activity_interval=0, restore_interval=0.2)


@on_server_loop
async def test_a_save_that_died_with_the_server_ends_the_move_at_once(
        jp_fetch: Any, sidecar: Any) -> None:
    failed = await wait_for_phase(jp_fetch, {"failed"}, timeout=30)
    assert failed["id"] == sidecar.orphan["id"]
    assert [h["phase"] for h in failed["history"]] == ["requested", "checkpointing",
                                                       "failed"]
    assert "the notebook server restarted while it saved the notebooks" in failed["error"]
    assert "nothing was changed" in failed["error"]
