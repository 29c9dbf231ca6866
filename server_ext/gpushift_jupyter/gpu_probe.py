"""What this container sees of GPUs: NVML (the notebook container has the devices; the
sidecar usually has none, so the extension measures utilisation for the idle timer).

`GPUSHIFT_FAKE_GPU` is set only by gpushift's local pod runner (a test harness) for a
pod on a fake GPU node of the local control plane: it reads as one GPU named after the
variable's value with 0 % utilisation. Nothing in the product sets it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from typing import Any

FAKE_GPU_ENV = "GPUSHIFT_FAKE_GPU"


@dataclass(frozen=True)
class GpuSample:
    names: tuple[str, ...]
    """One per visible GPU."""
    utilization_percent: float | None
    """Max over the GPUs; None when it could not be read."""
    fake: bool = False


def sample() -> GpuSample | None:
    """None when this container sees no GPU."""
    fake = os.environ.get(FAKE_GPU_ENV)
    if fake:
        return GpuSample(names=(f"fake GPU of the local runner ({fake})",),
                         utilization_percent=0.0, fake=True)
    try:
        pynvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py, untyped
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None  # no driver: a CPU pod
    try:
        names: list[str] = []
        percent: float | None = None
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            names.append(_text(pynvml.nvmlDeviceGetName(handle)))
            try:
                gpu = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                continue  # MIG slices and some vGPUs do not report it
            percent = gpu if percent is None else max(percent, gpu)
        return GpuSample(tuple(names), percent) if names else None
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
