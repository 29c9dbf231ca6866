"""The per-pod API token: a secret file in the runtime volume, checked in constant time.

Only the containers of this pod mount the runtime volume, so whoever can read
`api-token` is in the pod: the notebook's server extension reads it and sends it as
`Authorization: Bearer <token>`. Other processes that can reach loopback (any container
of the pod, e.g. istio-proxy) cannot use the API without it.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import stat
from pathlib import Path

from gpushift_sidecar.runtime_config import write_atomically

TOKEN_FILE = "api-token"  # noqa: S105 - the file's name, not a secret
TOKEN_BYTES = 32
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")

log = logging.getLogger("gpushift.sidecar")


class ApiToken:
    def __init__(self, value: str) -> None:
        self._value = value.encode("ascii")

    @classmethod
    def load_or_create(cls, runtime_dir: Path) -> ApiToken:
        """Reuse the token a previous run of this sidecar left in the pod's runtime
        volume (a restarted sidecar container keeps the notebook's server extension
        working); otherwise make a new one. Nothing is written here: see `write`."""
        existing = _read_existing(runtime_dir / TOKEN_FILE)
        if existing is not None:
            log.info("reusing the API token of this pod's previous sidecar run")
            return cls(existing)
        return cls(secrets.token_urlsafe(TOKEN_BYTES))

    def matches(self, candidate: str) -> bool:
        # compare_digest: how long the comparison takes says nothing about the token.
        return hmac.compare_digest(self._value, candidate.encode("utf-8", "replace"))

    def write(self, runtime_dir: Path) -> None:
        """Write the token file, mode 0600 (readable by this pod's user only)."""
        write_atomically(runtime_dir / TOKEN_FILE, self._value + b"\n", mode=0o600)

    def __repr__(self) -> str:  # never the value: reprs end up in logs
        return "ApiToken(<hidden>)"


def _read_existing(path: Path) -> str | None:
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.getuid():
            return None
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _TOKEN_SHAPE.match(text) else None
