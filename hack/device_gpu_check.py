#!/usr/bin/env python3
"""Check gpushift's GPU utilisation sampling on a real GPU machine; prints one JSON object.

    python3 hack/device_gpu_check.py [--seconds 3]

Needs only the standard library and nvidia-ml-py (`import pynvml`). If torch or cupy is
installed, it keeps the GPU busy with matrix products while it samples, so the samples
should rise above 0 %; without either it samples an idle GPU. Exit status 0 when NVML
was found and `gpu_utilization.sample()` gave a number, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
# gpushift_sidecar/__init__ reads the version from gpushift_webhook: both folders.
sys.path[:0] = [str(_ROOT / "sidecar"), str(_ROOT / "webhook")]

from gpushift_sidecar import gpu_utilization  # noqa: E402


def nvml_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"nvml_found": False}
    try:
        import pynvml
    except ImportError as exc:
        facts["error"] = f"pynvml not importable: {exc}"
        return facts
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        facts["error"] = f"nvmlInit failed: {type(exc).__name__}: {exc}"
        return facts
    facts["nvml_found"] = True
    try:
        facts["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        count = pynvml.nvmlDeviceGetCount()
        facts["device_count"] = count
        devices = []
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            dev: dict[str, Any] = {"index": i, "name": _text(pynvml.nvmlDeviceGetName(h))}
            try:
                dev["mig_mode"] = pynvml.nvmlDeviceGetMigMode(h)[0]
            except Exception as exc:
                dev["mig_mode"] = f"n/a ({type(exc).__name__})"
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            dev["memory_total_mib"] = mem.total // 2**20
            devices.append(dev)
        facts["devices"] = devices
    finally:
        pynvml.nvmlShutdown()
    return facts


def raw_sampler() -> Any:
    """A function giving per-device NVML utilisation, read directly (not via gpushift)."""
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    return lambda: [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]


def busy_loop(stop: threading.Event, ready: threading.Event, info: dict[str, Any]) -> None:
    """Matrix products on GPU 0 until `stop` is set, with torch or cupy if present;
    `ready` is set once the GPU is busy (or when there is nothing to run)."""
    try:
        _busy(stop, ready, info)
    finally:
        ready.set()


def _busy(stop: threading.Event, ready: threading.Event, info: dict[str, Any]) -> None:
    try:
        import torch

        if torch.cuda.is_available():
            info["busy_with"] = "torch"
            a = torch.randn(4096, 4096, device="cuda")
            (a @ a).sum().item()  # CUDA context and cuBLAS are up
            ready.set()
            n = 0
            while not stop.is_set():
                a = (a @ a).clamp_(-1, 1)
                n += 1
                if n % 16 == 0:
                    torch.cuda.synchronize()
            torch.cuda.synchronize()
            info["iterations"] = n
            return
        info["torch"] = "installed, but CUDA is not available"
    except ImportError:
        info["torch"] = "not installed"
    except Exception as exc:
        info["torch"] = f"failed: {type(exc).__name__}: {exc}"
    try:
        import cupy

        info["busy_with"] = "cupy"
        a = cupy.random.standard_normal((4096, 4096), dtype=cupy.float32)
        float((a @ a).sum())
        ready.set()
        n = 0
        while not stop.is_set():
            a = cupy.clip(a @ a, -1, 1)
            n += 1
            if n % 16 == 0:
                cupy.cuda.Device().synchronize()
        info["iterations"] = n
    except ImportError:
        info["cupy"] = "not installed"
        info["busy_with"] = None
    except Exception as exc:
        info["cupy"] = f"failed: {type(exc).__name__}: {exc}"
        info["busy_with"] = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "env": {k: os.environ.get(k) for k in
                ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")},
    }
    report.update(nvml_facts())
    sampler = gpu_utilization.GpuUtilization()
    report["sample_idle_before"] = sampler.sample()
    report["sample_idle_before_reason"] = sampler.unavailable_reason

    busy: dict[str, Any] = {}
    stop, ready = threading.Event(), threading.Event()
    worker = threading.Thread(target=busy_loop, args=(stop, ready, busy), daemon=True)
    t0 = time.monotonic()
    worker.start()
    ready.wait(timeout=120)  # importing torch and starting CUDA take seconds
    busy["startup_s"] = round(time.monotonic() - t0, 2)
    time.sleep(0.5)  # NVML's sample window fills with busy time
    samples: list[dict[str, Any]] = []
    raw = raw_sampler() if report["nvml_found"] else (lambda: None)
    start = time.monotonic()
    while time.monotonic() < start + args.seconds:
        samples.append({"t": round(time.monotonic() - start, 2), "raw_nvml": raw(),
                        "gpushift_sample": sampler.sample()})
        time.sleep(0.25)
    stop.set()
    worker.join(timeout=30)
    report["busy"] = busy
    report["samples_while_busy"] = samples
    time.sleep(2.0)  # let NVML's sample window forget the busy period
    report["sample_idle_after"] = sampler.sample()
    report["module_sample"] = gpu_utilization.sample()
    report["module_unavailable_reason"] = gpu_utilization.default_sampler().unavailable_reason
    sampler.close()
    print(json.dumps(report, indent=2, default=str))
    ok = report["nvml_found"] and report["module_sample"] is not None
    return 0 if ok else 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    sys.exit(main())
