"""The env the webhook gives the sidecar, for the sidecar's unit tests.

A helper module, not a conftest.py: tests/server imports its own conftest by name, and
a second conftest module on the path would shadow it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from gpushift_core.admin_settings import GpuProfile
from gpushift_webhook.config import WebhookConfig

EnvironFactory = Callable[..., dict[str, str]]


def two_profile_config() -> WebhookConfig:
    return WebhookConfig(profiles=[GpuProfile(name="nvidia-1"),
                                   GpuProfile(name="nvidia-2", count=2)],
                         default_profile="nvidia-1")


def make_environ(tmp_path: Path, gpu: tuple[str, int] | None = None, workspace: bool = True,
                 **overrides: str) -> dict[str, str]:
    """The webhook's env for a notebook pod, with its directories under tmp_path."""
    (tmp_path / "ws").mkdir(exist_ok=True)
    env = {
        "GPUSHIFT_POD_NAME": "my-notebook-0",
        "GPUSHIFT_POD_NAMESPACE": "kubeflow-user",
        "GPUSHIFT_POD_UID": "0b9d5c9e-uid",
        "GPUSHIFT_NODE_NAME": "node-a",
        "GPUSHIFT_NOTEBOOK_NAME": "my-notebook",
        "GPUSHIFT_NOTEBOOK_CONTAINER": "my-notebook",
        "GPUSHIFT_GPU_RESOURCE": gpu[0] if gpu else "",
        "GPUSHIFT_GPU_COUNT": str(gpu[1] if gpu else 0),
        "GPUSHIFT_RUNTIME_DIR": str(tmp_path / "run"),
        "GPUSHIFT_WORKSPACE_DIR": str(tmp_path / "ws") if workspace else "",
        "GPUSHIFT_API_PORT": "8765",
        "GPUSHIFT_SETTINGS": two_profile_config().sidecar_settings_json,
    }
    env.update(overrides)
    return env


def environ_factory(tmp_path: Path) -> EnvironFactory:
    """`environ(gpu=("nvidia.com/gpu", 1), workspace=False, VAR=value)`."""
    return functools.partial(make_environ, tmp_path)
