"""`gpushift_core.kube.connection`: reading a kubeconfig and the in-cluster environment
(pure file and environment handling), and what a request sends, against a real local
HTTP server. TLS and credentials against the real API server are in
tests/cluster/test_kube_connection_cluster.py."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gpushift_testing.pki import write_kubeconfig_of

from gpushift_core.kube import connection
from gpushift_core.kube.connection import (
    ApiError,
    ClusterAccess,
    ConfigError,
    Connection,
    cluster_access,
    from_kubeconfig,
    in_cluster,
)


def kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any] | None = None,
               context: str | None = None) -> Path:
    return write_kubeconfig_of(path, cluster, user, current_context=context)


def test_a_kubeconfigs_paths_are_relative_to_its_folder(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {
        "server": "https://api.example:6443/", "certificate-authority": "ca.crt"}, {
        "client-certificate": "/abs/user.crt", "client-key": "user.key",
        "tokenFile": "token"})
    access = from_kubeconfig(str(path))
    assert access.server == "https://api.example:6443"
    assert access.ca_file == str(tmp_path / "ca.crt")
    assert access.cert_file == "/abs/user.crt"
    assert access.key_file == str(tmp_path / "user.key")
    assert access.token_file == str(tmp_path / "token") and access.token is None


def test_inline_data_and_insecure(tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    path = kubeconfig(tmp_path / "config", {
        "server": "https://h:1", "certificate-authority-data": b64("CA PEM"),
        "insecure-skip-tls-verify": True}, {
        "client-certificate-data": b64("CERT"), "client-key-data": b64("KEY"),
        "token": "t0k"})
    access = from_kubeconfig(str(path))
    assert (access.ca_data, access.cert_data, access.key_data) == ("CA PEM", b"CERT", b"KEY")
    assert access.insecure and access.token == "t0k"


def test_kubeconfig_from_the_environment(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = kubeconfig(tmp_path / "first", {"server": "https://first:1"})
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'second'}")
    assert from_kubeconfig().server == "https://first:1"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", {"server": "https://home:1"})
    assert from_kubeconfig().server == "https://home:1"


@pytest.mark.parametrize(("user", "message"), [
    ({"exec": {"command": "aws"}}, "'exec' is not supported"),
    ({"auth-provider": {"name": "oidc"}}, "'auth-provider' is not supported"),
    ({"username": "u", "password": "p"}, "'username' is not supported"),
    ({"client-key-data": "not base64!"}, "not base64"),
])
def test_kubeconfig_users_it_cannot_use(tmp_path: Path, user: dict[str, Any],
                                        message: str) -> None:
    path = kubeconfig(tmp_path / "config", {"server": "https://h:1"}, user)
    with pytest.raises(ConfigError, match=message):
        from_kubeconfig(str(path))


def test_broken_kubeconfigs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        from_kubeconfig(str(tmp_path / "missing"))
    (tmp_path / "list").write_text("- a\n")
    with pytest.raises(ConfigError, match="is not a kubeconfig"):
        from_kubeconfig(str(tmp_path / "list"))
    path = kubeconfig(tmp_path / "config", {"server": "https://h:1"}, context="other")
    with pytest.raises(ConfigError, match="no context named 'other'"):
        from_kubeconfig(str(path))
    path = kubeconfig(tmp_path / "config", {"certificate-authority": "ca.crt"})
    with pytest.raises(ConfigError, match="has no server"):
        from_kubeconfig(str(path))


def test_in_cluster(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ConfigError, match="no ServiceAccount token"):
        in_cluster(str(tmp_path), environ)
    (tmp_path / "token").write_text("t")
    access = in_cluster(str(tmp_path), environ)
    assert access.server == "https://10.96.0.1:443"
    assert (access.ca_file, access.token_file) == (str(tmp_path / "ca.crt"),
                                                   str(tmp_path / "token"))
    ipv6 = in_cluster(str(tmp_path), {**environ, "KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert ipv6.server == "https://[fd00::1]:443"
    with pytest.raises(ConfigError, match="not in a pod"):
        in_cluster(str(tmp_path), {})


def test_cluster_access_prefers_the_pod(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("t")
    monkeypatch.setattr(connection, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config",
                                                    {"server": "https://dev:1"})))
    assert cluster_access().server == "https://10.0.0.1:6443"
    assert cluster_access(str(tmp_path / "config")).server == "https://dev:1"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert cluster_access().server == "https://dev:1"


class Recorder(ThreadingHTTPServer):
    """Answers every request with its own method, path and headers (404 for /missing)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        missing = self.path.startswith("/missing")
        data = json.dumps({"kind": "Status", "code": 404} if missing else {
            "method": self.command, "path": self.path, "body": body,
            "headers": dict(self.headers)}).encode()
        self.send_response(404 if missing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_what_a_request_sends(recorder: Recorder) -> None:
    sent = Connection(ClusterAccess(server=recorder.url, token="secret"))
    answer = json.loads(sent.request(
        "POST", "/api/v1/x", query=[("watch", True), ("labelSelector", "a=b,c"),
                                    ("limit", 5)],
        body=b'{"k": 1}', headers={"Content-Type": "application/json"}).data)
    assert answer["method"] == "POST" and answer["body"] == '{"k": 1}'
    assert answer["path"] == "/api/v1/x?watch=true&labelSelector=a%3Db%2Cc&limit=5"
    assert answer["headers"]["Authorization"] == "Bearer secret"
    assert answer["headers"]["User-Agent"] == "gpushift"
    with pytest.raises(ApiError) as err:
        sent.request("GET", "/missing")
    assert err.value.status == 404 and json.loads(err.value.body)["code"] == 404
    anonymous = Connection(ClusterAccess(server=recorder.url))
    assert "Authorization" not in json.loads(anonymous.request("GET", "/").data)["headers"]


def test_a_token_file_is_read_again_after_its_interval(recorder: Recorder,
                                                       tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    sent = Connection(ClusterAccess(server=recorder.url, token_file=str(token),
                                    token_reread_seconds=0.3))

    def bearer() -> str:
        return str(json.loads(sent.request("GET", "/").data)["headers"]["Authorization"])

    assert bearer() == "Bearer first"
    token.write_text("second")
    assert bearer() == "Bearer first"  # not read at every request
    time.sleep(0.35)
    assert bearer() == "Bearer second"
