"""gpushift's per-pod agent, injected by the webhook next to every opted-in notebook.

`env` reads what the webhook handed over; `runtime_config` and `token` write the files
the notebook container reads; `state` is the migration state machine and its file on
the workspace volume; `api` is the loopback HTTP API; `cli` is `gpushift-sidecar`.
"""

# One version for the whole distribution: the webhook's annotation and the sidecar's
# runtime-config.json must name the same gpushift.
from gpushift_core.version import __version__

__all__ = ["__version__"]
