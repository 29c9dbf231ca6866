"""Run the real `gpushift-webhook serve` over HTTPS with certificates from `gpushift-certs`."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpushift_testing.processes import stop_process

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def issue_certs(out: Path, *extra: str) -> None:
    subprocess.run([BIN / "gpushift-certs", "issue", "--out-dir", str(out), "--ip", "127.0.0.1",
                    "--dns", "localhost", *extra], check=True, capture_output=True)


@dataclass
class Webhook:
    url: str
    cert_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def client_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def logs(self) -> str:
        return self.log.read_text()


def start_webhook(tmp: Path, cert_dir: Path, *args: str, wait_ready: bool = True) -> Webhook:
    port = free_port()
    log = tmp / f"webhook-{port}.log"
    process = subprocess.Popen(
        [BIN / "gpushift-webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--cert-dir", str(cert_dir), "--reload-interval", "0.2", *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    hook = Webhook(f"https://127.0.0.1:{port}", cert_dir, process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"webhook exited {process.returncode}:\n{hook.logs()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"webhook did not listen:\n{hook.logs()}")
    if wait_ready:
        wait_until_ready(hook)
    return hook


def wait_until_ready(hook: Webhook, timeout: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(hook.url + "/readyz", context=hook.client_ssl(),
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"webhook not ready:\n{hook.logs()}")


def stop(hook: Webhook) -> int:
    return stop_process(hook.process)


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    out = tmp_path / "certs"
    issue_certs(out)
    return out


@pytest.fixture
def webhook(tmp_path: Path, cert_dir: Path) -> Iterator[Webhook]:
    hook = start_webhook(tmp_path, cert_dir, "--max-body-bytes", str(256 * 1024))
    yield hook
    stop(hook)
