"""`gpushift-sidecar probe`: the sidecar's startup probe, run in every notebook pod until
the sidecar is ready. Only the standard library, imported as it is needed: a probe is a
process of its own each time, and a move's new notebook container waits for it.

It keeps asking for up to `--wait` seconds (the injected probe: 1 s of its 2 s
timeout), so a pod's notebook container starts as soon as the sidecar is ready, not up
to a probe period later.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_RUNTIME_CONFIG = "runtime-config.json"  # as gpushift_sidecar.runtime_config.FILE_NAME
_PROBE_RETRY_S = 0.05


def run_probe(port: int, timeout: float, wait: float = 0.0,
              runtime_dir: Path | None = None) -> int:
    """0 once `runtime_dir` holds runtime-config.json (the sidecar writes it first
    thing, before its server's imports) or GET /healthz answers 200, within `wait`
    seconds (looked at every 50 ms); else 1 with the last reason on stderr (the kubelet
    puts it in the probe's event): /healthz says why the files are not written."""
    deadline = time.monotonic() + wait
    while True:
        if runtime_dir is not None and (runtime_dir / _RUNTIME_CONFIG).is_file():
            return 0
        left = deadline - time.monotonic()
        ready, why = _ask_healthz(port, timeout if left <= 0 else min(timeout, left))
        if ready:
            return 0
        if time.monotonic() + _PROBE_RETRY_S >= deadline:
            print(f"gpushift-sidecar probe: {why}", file=sys.stderr)
            return 1
        time.sleep(_PROBE_RETRY_S)


def _ask_healthz(port: int, timeout: float) -> tuple[bool, str]:
    # Not at the top: http.client (email, ssl...) doubles the probe's start, and the
    # probe of a starting sidecar usually finds runtime-config.json before it asks.
    import http.client  # noqa: PLC0415

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read(2048).decode("utf-8", "replace")
    except OSError as exc:
        return False, f"no answer on 127.0.0.1:{port}: {exc}"
    finally:
        connection.close()
    return response.status == 200, f"{response.status} {body}"
