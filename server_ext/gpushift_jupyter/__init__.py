"""gpushift's notebook side: the Jupyter Server extension (`/<base_url>/api_extension`),
the GPU-need classifier, the kishu checkpoint/restore driver and the JupyterLab plugins.

It imports nothing of the cluster side: it reaches the pod's sidecar over loopback HTTP.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    # Imported late: `jupyter server extension list` imports this package cheaply.
    from gpushift_jupyter.app import GpushiftExtension  # noqa: PLC0415

    return [{"module": "gpushift_jupyter", "app": GpushiftExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "gpushift-jupyter"}]
