"""Where the Kubernetes API is, whom to trust there, who we are, and the pool of
connections every request of the cluster side goes through.

The cluster side needs four things of a Kubernetes client: the in-cluster
ServiceAccount (its token re-read as the kubelet rotates it), a kubeconfig for tests and
development, TLS, and one HTTP connection pool. That is this module, over urllib3 (the
pool the official client uses too). The official `kubernetes` package is not imported:
its package init alone loads the kubeconfig machinery with OAuth, the dynamic client and
pydantic, about 0.2 s of CPU at every start of every sidecar and webhook process. Under
the sidecar's 250m CPU limit that is most of a second of a move's new pod.

A kubeconfig may name its user by `token`, `tokenFile` or a client certificate
(`client-certificate`/`client-key`, or their `-data` forms); the cluster by
`certificate-authority` (or `-data`) or `insecure-skip-tls-verify`. A user that needs
an `exec` plugin or an `auth-provider` is refused with a message that says so: the
cluster side runs in pods, under a ServiceAccount. A cluster's `proxy-url` and
`tls-server-name` are not read.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

__all__ = ["SERVICE_ACCOUNT_DIR", "ApiError", "ClusterAccess", "ConfigError", "Connection",
           "cluster_access", "from_kubeconfig", "in_cluster"]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
USER_AGENT = "gpushift"


class ApiError(Exception):
    """The API answered with a status other than 2xx. `body` is the answer as text (the
    API's Status, JSON); `reason` the HTTP reason phrase."""

    def __init__(self, status: int, reason: str, body: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"({status}) {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})


class ConfigError(ValueError):
    """No way to reach the API: not in a pod, and no kubeconfig this module can use."""


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach one API server."""

    server: str
    """Its base URL, `https://host:port` (`http://` only for tests)."""
    ca_file: str | None = None
    """A PEM file of the CAs that sign the server's certificate."""
    ca_data: str | None = None
    """The same as PEM text (a kubeconfig's `certificate-authority-data`)."""
    insecure: bool = False
    """Do not verify the server's certificate (`insecure-skip-tls-verify`)."""
    cert_file: str | None = None
    """A client certificate (PEM file), with `key_file`."""
    key_file: str | None = None
    """The client certificate's private key (PEM file)."""
    cert_data: bytes | None = None
    """A client certificate as PEM (`client-certificate-data`), with `key_data`."""
    key_data: bytes | None = None
    """Its private key as PEM (`client-key-data`)."""
    token: str | None = None
    """A bearer token."""
    token_file: str | None = None
    """A file holding the bearer token, read again every `token_reread_seconds`: the
    kubelet rotates a pod's ServiceAccount token in place."""
    token_reread_seconds: float = 60.0
    """How long a token read from `token_file` is used before the file is read again
    (client-go's interval)."""


def in_cluster(directory: str | None = None,
               environ: Mapping[str, str] | None = None) -> ClusterAccess:
    """The pod's ServiceAccount: the API's Service from the environment the kubelet sets,
    the token and CA of the ServiceAccount mounted at `directory` (SERVICE_ACCOUNT_DIR).
    ConfigError outside a pod."""
    directory = directory or SERVICE_ACCOUNT_DIR
    environ = os.environ if environ is None else environ
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    token = Path(directory, "token")
    if not host or not port:
        raise ConfigError("not in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
    if not token.is_file():
        raise ConfigError(f"not in a pod: no ServiceAccount token at {token}")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return ClusterAccess(server=f"https://{host}:{port}", ca_file=str(Path(directory, "ca.crt")),
                         token_file=str(token))


def from_kubeconfig(path: str | None = None) -> ClusterAccess:
    """The current context of a kubeconfig: `path`, else the first file of $KUBECONFIG,
    else ~/.kube/config."""
    if not path:
        listed = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        path = listed or str(Path.home() / ".kube" / "config")
    import yaml  # noqa: PLC0415 - only here: a pod (in-cluster) does not need it

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the kubeconfig {path}: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} is not a kubeconfig")
    base = Path(path).parent
    context = _named(document, "contexts", document.get("current-context"), path)
    cluster = _named(document, "clusters", context.get("cluster"), path)
    user = _named(document, "users", context.get("user"), path, required=False)
    for unsupported in ("exec", "auth-provider", "username"):
        if unsupported in user:
            raise ConfigError(
                f"{path}: the user's {unsupported!r} is not supported by gpushift's cluster "
                "side; give it a token, a tokenFile or a client certificate")
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{path}: the cluster has no server")
    return ClusterAccess(
        server=server.rstrip("/"),
        ca_file=_relative(base, cluster.get("certificate-authority")),
        ca_data=_decoded(cluster.get("certificate-authority-data"), path).decode() or None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=_relative(base, user.get("client-certificate")),
        key_file=_relative(base, user.get("client-key")),
        cert_data=_decoded(user.get("client-certificate-data"), path) or None,
        key_data=_decoded(user.get("client-key-data"), path) or None,
        token=user.get("token") or None,
        token_file=_relative(base, user.get("tokenFile")),
    )


def cluster_access(kubeconfig: str | None = None) -> ClusterAccess:
    """`kubeconfig` when given; else, in a pod, its ServiceAccount; else the default
    kubeconfig."""
    if kubeconfig:
        return from_kubeconfig(kubeconfig)
    try:
        return in_cluster()
    except ConfigError:
        return from_kubeconfig()


def _named(document: Mapping[str, Any], section: str, name: Any, path: str,
           required: bool = True) -> dict[str, Any]:
    """The body of the entry `name` of a kubeconfig's `section` (`clusters` -> `cluster`)."""
    key = section[:-1]
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(key) or {}
            if isinstance(body, dict):
                return body
    if not required:
        return {}
    raise ConfigError(f"{path}: no {key} named {name!r}")


def _relative(base: Path, value: Any) -> str | None:
    """A kubeconfig's file paths are relative to the kubeconfig's own folder."""
    if not isinstance(value, str) or not value:
        return None
    return str(base / value)


def _decoded(value: Any, path: str) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: a -data field is not base64: {error}") from None


class Connection:
    """Requests to one API server over a urllib3 pool (thread-safe: the cluster side
    calls it from worker threads, see `transport`)."""

    def __init__(self, access: ClusterAccess, *, pool_size: int = 32) -> None:
        """`pool_size`: connections kept open for reuse (made only as needed); as many as
        asyncio's default executor has threads, so no request's connection is dropped."""
        self.access = access
        self._token_lock = threading.Lock()
        self._token: tuple[str, float] | None = None  # (token, monotonic time read)
        context = _tls_context(access) if access.server.startswith("https://") else None
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=pool_size, ssl_context=context)

    def request(self, method: str, path: str, *, query: Iterable[tuple[str, Any]] = (),
                body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: Any = None, preload: bool = True) -> urllib3.BaseHTTPResponse:
        """Send one request (no retries: `transport` decides those). The response, its
        body read unless `preload` is false; ApiError for any status but 2xx.
        `timeout`: seconds, or (connect, read) seconds, or None (no limit)."""
        url = self.access.server + path
        pairs = [(key, _query_value(value)) for key, value in query]
        if pairs:
            url += "?" + urlencode(pairs)
        sent = {"User-Agent": USER_AGENT, **(headers or {})}
        token = self._bearer()
        if token:
            sent["Authorization"] = f"Bearer {token}"
        response = self._pool.request(method, url, body=body, headers=sent,
                                      timeout=_timeout(timeout), retries=False,
                                      preload_content=preload)
        if not 200 <= response.status <= 299:
            data = response.data  # reads the rest of the body, then returns the connection
            raise ApiError(response.status, response.reason or "",
                           data.decode("utf-8", "replace"), dict(response.headers))
        return response

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.clear()

    def _bearer(self) -> str | None:
        access = self.access
        if not access.token_file:
            return access.token
        with self._token_lock:
            now = time.monotonic()
            if self._token is None or now - self._token[1] >= access.token_reread_seconds:
                self._token = (Path(access.token_file).read_text().strip(), now)
            return self._token[0]


def _tls_context(access: ClusterAccess) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=access.ca_file, cadata=access.ca_data)
    if access.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if access.cert_file:
        context.load_cert_chain(access.cert_file, access.key_file)
    elif access.cert_data:
        _load_cert_data(context, access.cert_data, access.key_data or b"")
    return context


def _load_cert_data(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`ssl` loads a certificate chain from files only: write both to a private folder,
    load them, remove them again (the context keeps what it loaded)."""
    with tempfile.TemporaryDirectory(prefix="gpushift-kube-") as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        for target, data in ((cert_path, cert), (key_path, key)):
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with contextlib.closing(os.fdopen(descriptor, "wb")) as handle:
                handle.write(data)
        context.load_cert_chain(str(cert_path), str(key_path) if key else None)


def _query_value(value: Any) -> str:
    """As the API expects it: booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _timeout(value: Any) -> urllib3.Timeout:
    if value is None:
        return urllib3.Timeout(connect=None, read=None)
    if isinstance(value, tuple):
        connect, read = value
        return urllib3.Timeout(connect=connect, read=read)
    return urllib3.Timeout(total=value)
