"""`gpushift_core.kube.connection` against the real kube-apiserver: the kubeconfig forms a
developer's or CI's kubeconfig uses (a client certificate and the CA inline as `-data`,
files next to the kubeconfig, a token file, `insecure-skip-tls-verify`), each checked by
who the API server says we are. The token and in-cluster forms are the sidecar's, in
test_sidecar_patching.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpushift_testing.pki import client_certificate, write_kubeconfig_of

from gpushift_core.kube.connection import ApiError, Connection, from_kubeconfig

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def _client_cert(control_plane: Any, user: str) -> tuple[bytes, bytes]:
    """A client certificate for `user`, signed by the CA the API server trusts for them."""
    pki = Path(control_plane.ca_file).parent
    return client_certificate(pki / "ca.crt", pki / "ca.key", user)


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> str:
    return str(write_kubeconfig_of(path, cluster, user))


def _who(connection: Connection) -> str:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = connection.request("POST", REVIEW, body=json.dumps(review).encode(),
                                headers={"Content-Type": "application/json"})
    return str(json.loads(answer.data)["status"]["userInfo"]["username"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_client_certificate_and_the_ca_inline(control_plane: Any, tmp_path: Path) -> None:
    cert, key = _client_cert(control_plane, "gpushift-cert-user")
    ca = Path(control_plane.ca_file).read_bytes()
    path = _kubeconfig(tmp_path / "config", {
        "server": control_plane.server, "certificate-authority-data": _b64(ca)}, {
        "client-certificate-data": _b64(cert), "client-key-data": _b64(key)})
    connection = Connection(from_kubeconfig(path))
    try:
        assert _who(connection) == "gpushift-cert-user"
    finally:
        connection.close()


def test_files_next_to_the_kubeconfig_and_a_token_file(control_plane: Any,
                                                        tmp_path: Path) -> None:
    cert, key = _client_cert(control_plane, "gpushift-file-user")
    (tmp_path / "ca.crt").write_bytes(Path(control_plane.ca_file).read_bytes())
    (tmp_path / "user.crt").write_bytes(cert)
    (tmp_path / "user.key").write_bytes(key)
    path = _kubeconfig(tmp_path / "config", {
        "server": control_plane.server, "certificate-authority": "ca.crt"}, {
        "client-certificate": "user.crt", "client-key": "user.key"})
    connection = Connection(from_kubeconfig(path))
    try:
        assert _who(connection) == "gpushift-file-user"
    finally:
        connection.close()
    admin = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    (tmp_path / "token").write_text(admin["users"][0]["user"]["token"] + "\n")
    path = _kubeconfig(tmp_path / "config", {
        "server": control_plane.server, "insecure-skip-tls-verify": True},
        {"tokenFile": "token"})
    connection = Connection(from_kubeconfig(path))
    try:
        assert _who(connection) == "admin"
    finally:
        connection.close()


def test_the_server_certificate_is_verified(control_plane: Any, tmp_path: Path) -> None:
    """Without the cluster's CA the TLS handshake fails: no request is sent."""
    cert, key = _client_cert(control_plane, "gpushift-cert-user")
    path = _kubeconfig(tmp_path / "config", {"server": control_plane.server}, {
        "client-certificate-data": _b64(cert), "client-key-data": _b64(key)})
    connection = Connection(from_kubeconfig(path))
    try:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            connection.request("GET", "/version", timeout=5)
    finally:
        connection.close()


def test_no_credentials_is_anonymous_and_refused(control_plane: Any, tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", {
        "server": control_plane.server, "certificate-authority": str(control_plane.ca_file)},
        {})
    connection = Connection(from_kubeconfig(path))
    try:
        with pytest.raises(ApiError) as err:
            connection.request("GET", "/api/v1/namespaces")
        assert err.value.status in (401, 403)
        assert "Status" in err.value.body
    finally:
        connection.close()

