"""What `GET /api_extension` answers: the sidecar's runtime-config.json, and whether the
optimizer is on (pure, apart from reading the one file).

The document keeps the seed's keys (`usingGPU`, `PodName`, `PodNamespace`) in every
case, so an older front end still reads it, and adds `optimizer`: `{"state": "on"}`
when the sidecar's file is there and sound, else `{"state": "off", "reason": ...}` —
the pod was not injected (no GPUSHIFT_RUNTIME_DIR), the file is missing (the sidecar
has not written it), it is broken, or the sidecar says the optimizer is off for this
notebook (`optimizerOff`: the admin keeps it off for the Notebook's server type).
Never an exception: the front end shows "optimizer off" with the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "runtime-config.json"
SEED_KEYS = ("usingGPU", "PodName", "PodNamespace")
# The sidecar writes a few KiB; anything much larger is not its file.
_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RuntimeInfo:
    document: dict[str, Any]
    """The answer of `GET /api_extension`."""

    @property
    def optimizer_on(self) -> bool:
        return bool(self.document["optimizer"]["state"] == "on")

    @property
    def using_gpu(self) -> bool:
        return bool(self.document.get("usingGPU"))

    @property
    def off_reason(self) -> str:
        return str(self.document["optimizer"].get("reason") or "")


# Set on the notebook container by gpushift's migration guard when the sidecar could not
# start in this notebook's pod (image pull failure, crash loop): the pod was recreated
# without it, and the value says why. The name is a contract with the cluster side
# (gpushift_core.labels.OPTIMIZER_OFF_ENV), which this package does not import.
OPTIMIZER_OFF_ENV = "GPUSHIFT_OPTIMIZER_OFF"


def read_runtime_info(runtime_dir: Path | None, *, sees_gpu: Callable[[], bool],
                      pod_name: str | None = None,
                      environ: Mapping[str, str] = os.environ) -> RuntimeInfo:
    """`runtime_dir` None: the pod was not injected. `sees_gpu`: whether this container
    sees a GPU itself (NVML), asked only when the sidecar's word is missing."""
    def off(reason: str) -> RuntimeInfo:
        return RuntimeInfo({
            "usingGPU": sees_gpu(),
            "PodName": pod_name if pod_name is not None else os.environ.get("HOSTNAME"),
            "PodNamespace": None,
            "optimizer": {"state": "off", "reason": reason},
        })

    guard_said = environ.get(OPTIMIZER_OFF_ENV)
    if guard_said:
        return off(guard_said)
    if runtime_dir is None:
        return off("this pod was not injected by gpushift (no GPUSHIFT_RUNTIME_DIR): "
                   "moves between CPU and GPU are off for it")
    path = runtime_dir / FILE_NAME
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return off(f"{path} does not exist: the gpushift sidecar has not written it")
    except OSError as exc:
        return off(f"{path} cannot be read: {exc.strerror}")
    if len(raw) > _MAX_BYTES:
        return off(f"{path} is larger than {_MAX_BYTES} bytes: not the sidecar's file")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return off(f"{path} is not JSON ({exc}); the sidecar rewrites it on its next change")
    if not isinstance(document, dict):
        return off(f"{path} is not a JSON object")
    missing = [k for k in SEED_KEYS if k not in document]
    if missing or not isinstance(document.get("usingGPU"), bool):
        return off(f"{path} lacks {', '.join(missing) or 'a true/false usingGPU'}")
    off_reason = document.get("optimizerOff")
    if isinstance(off_reason, str) and off_reason:
        document["optimizer"] = {"state": "off", "reason": off_reason}
    else:
        document["optimizer"] = {"state": "on", "reason": None}
    return RuntimeInfo(document)
