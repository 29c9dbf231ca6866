"""GPU utilisation through NVML (`nvidia-ml-py`, imported as `pynvml`), for the idle timer.

`sample()` is the highest utilisation (percent, NVML's "GPU busy" over its last sample
period) over the GPUs NVML sees in this container, or None when it cannot tell: the
library is not installed, the driver's libnvidia-ml is not there, no GPU is visible,
or no GPU reports utilisation (e.g. MIG instances). It never raises; why it cannot tell
is logged once per distinct reason.

NVML is initialised on the first sample, not at import. After a failed initialisation
it is tried again only after `retry_seconds` (the driver does not usually appear later).

Note: NVML sees only the GPUs whose device nodes the container has. In Kubernetes the
device plugin gives those to the container that requests the GPU (the notebook
container), not to a sidecar next to it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gpushift.sidecar")


class GpuUtilization:
    """Lazily initialised NVML sampler. Thread-safe."""

    def __init__(self, *, loader: Callable[[], Any] | None = None,
                 retry_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader or _import_pynvml
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._failed_at: float | None = None
        self._logged: set[str] = set()
        self.unavailable_reason: str | None = None
        """Why the last sample was None (None: it was a number)."""

    def sample(self) -> float | None:
        with self._lock:
            try:
                nvml = self._ensure()
                if nvml is None:
                    return None
                return self._read(nvml)
            except Exception as exc:  # NVML is a C library behind ctypes: never raise
                self._unavailable(f"NVML failed: {type(exc).__name__}: {exc}")
                return None

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                with contextlib.suppress(Exception):  # nothing to do about it at shutdown
                    self._nvml.nvmlShutdown()
                self._nvml = None

    def _ensure(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        if self._failed_at is not None and self._clock() - self._failed_at < self._retry_seconds:
            return None
        try:
            nvml = self._loader()
        except ImportError as exc:
            self._failed_at = self._clock()
            self._unavailable(f"nvidia-ml-py (pynvml) is not installed: {exc}")
            return None
        try:
            nvml.nvmlInit()
        except Exception as exc:
            self._failed_at = self._clock()
            self._unavailable(f"NVML did not initialise (no NVIDIA driver library in this "
                              f"container?): {_nvml_error(exc)}")
            return None
        self._nvml = nvml
        self._failed_at = None
        return nvml

    def _read(self, nvml: Any) -> float | None:
        count = int(nvml.nvmlDeviceGetCount())
        if count == 0:
            self._unavailable("NVML sees no GPU in this container")
            return None
        best: float | None = None
        errors: list[str] = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                percent = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception as exc:
                errors.append(f"GPU {index}: {_nvml_error(exc)}")
                continue
            best = percent if best is None else max(best, percent)
        if best is None:
            self._unavailable("no GPU reports its utilisation: " + "; ".join(errors))
            return None
        self.unavailable_reason = None
        return best

    def _unavailable(self, reason: str) -> None:
        self.unavailable_reason = reason
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("GPU utilisation unavailable; the idle timer goes by GPU cells only",
                        extra={"why": reason})


def _import_pynvml() -> Any:
    return importlib.import_module("pynvml")


def _nvml_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


_default: GpuUtilization | None = None
_default_lock = threading.Lock()


def default_sampler() -> GpuUtilization:
    global _default  # noqa: PLW0603 - one NVML session per process
    with _default_lock:
        if _default is None:
            _default = GpuUtilization()
        return _default


def sample() -> float | None:
    """Max GPU utilisation (percent) over the visible GPUs; None when NVML cannot tell."""
    return default_sampler().sample()
