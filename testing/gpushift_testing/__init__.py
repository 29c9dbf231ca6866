"""Test helpers for gpushift: a real local Kubernetes control plane (see controlplane.py)."""

from typing import Any

__all__ = ["ControlPlane", "ControlPlaneError"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m gpushift_testing.controlplane` does not import it twice.
    if name in __all__:
        from gpushift_testing import controlplane

        return getattr(controlplane, name)
    raise AttributeError(name)
