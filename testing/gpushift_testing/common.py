"""Constants and small helpers shared by the local control plane's modules."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCALHOST = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says why."""


def free_port() -> int:
    """One free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a (log) file, read from its last 256 KiB."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except OSError as e:
        return [f"<cannot read {path}: {e}>"]
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (0 when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_err: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except ControlPlaneError:
            raise  # a component died: no point in waiting
        except Exception as e:
            last_err = e
        else:
            if result:
                return result
        time.sleep(interval)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}: {last_err!r}")
