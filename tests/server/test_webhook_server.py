"""The real HTTPS server, end to end over TLS."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess

import aiohttp
import pytest
from conftest import BIN, issue_certs, start_webhook, stop, wait_until_ready
from cryptography import x509
from kubeflow_pods import admission_review, notebook_pod

from gpushift_certs.issue import new_ca, new_serving_cert, write_cert_dir


async def post(session, hook, body, *, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    async with session.post(hook.url + "/mutate", data=data, ssl=hook.client_ssl(),
                            headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


async def test_health_ready_metrics_and_one_review(webhook):
    async with aiohttp.ClientSession() as s:
        async with s.get(webhook.url + "/healthz", ssl=webhook.client_ssl()) as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok", "loops": {}}
        async with s.get(webhook.url + "/readyz", ssl=webhook.client_ssl()) as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "ready"
            expires = dt.datetime.fromisoformat(body["certificate_expires"])
        review = admission_review(notebook_pod(gpu=1))
        status, answer = await post(s, webhook, review)
        assert status == 200
        response = answer["response"]
        assert response["uid"] == review["request"]["uid"] and response["allowed"] is True
        ops = json.loads(base64.b64decode(response["patch"]))
        assert any(op["path"] == "/spec/initContainers" for op in ops)
        async with s.get(webhook.url + "/metrics", ssl=webhook.client_ssl()) as r:
            text = await r.text()
    assert 'gpushift_webhook_reviews_total{outcome="injected"} 1.0' in text
    assert "gpushift_webhook_review_duration_seconds_bucket" in text
    expiry = next(float(line.split()[1]) for line in text.splitlines()
                  if line.startswith("gpushift_webhook_certificate_expiry_timestamp_seconds "))
    assert expiry == expires.timestamp()
    # One structured line per admission decision.
    lines = [json.loads(line) for line in webhook.logs().splitlines() if line.startswith("{")]
    admission = [line for line in lines if line.get("msg") == "admission"]
    assert admission and admission[0]["outcome"] == "injected"
    assert admission[0]["notebook"] == "my-notebook" and admission[0]["uid"]


@pytest.mark.parametrize(("raw", "error"), [
    (b"not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[]", "invalid_review"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "request": {}}).encode(), "unsupported_api_version"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"kind": {"kind": "Pod"}, "object": {}}}).encode(),
     "invalid_review"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": "1", "kind": {"group": "apps", "kind": "Deployment"},
                             "object": {}}}).encode(), "not_a_pod"),
    (b"{" + b" " * (300 * 1024) + b"}", "request_too_large"),
])
async def test_bad_requests_get_400_json_and_the_server_carries_on(webhook, raw, error):
    async with aiohttp.ClientSession() as s:
        status, body = await post(s, webhook, None, raw=raw)
        assert status == 400
        assert body["error"] == error and body["detail"]
        status, _ = await post(s, webhook, admission_review(notebook_pod()))
        assert status == 200
    assert "Traceback" not in webhook.logs()


async def test_unknown_routes_and_methods_answer_json(webhook):
    async with aiohttp.ClientSession() as s:
        async with s.get(webhook.url + "/mutate", ssl=webhook.client_ssl()) as r:
            assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
        async with s.get(webhook.url + "/nope", ssl=webhook.client_ssl()) as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"


async def test_rotated_certificates_are_served_without_failing_a_request(tmp_path, cert_dir,
                                                                         request):
    hook = start_webhook(tmp_path, cert_dir)
    request.addfinalizer(lambda: stop(hook))  # also when an assertion fails midway
    failures: list[str] = []
    served: set[int] = set()
    stop_flag = asyncio.Event()
    ok = 0

    async def client(fresh_connections: bool) -> None:
        nonlocal ok
        connector = aiohttp.TCPConnector(force_close=fresh_connections)
        async with aiohttp.ClientSession(connector=connector) as s:
            while not stop_flag.is_set():
                review = admission_review(notebook_pod())
                try:
                    async with s.post(hook.url + "/mutate", json=review,
                                      ssl=hook.client_ssl()) as r:
                        body = await r.json()
                        if r.status != 200 or body["response"]["uid"] != review["request"][
                                "uid"]:
                            failures.append(f"{r.status} {body}")
                        ok += 1
                except (aiohttp.ClientError, OSError) as exc:
                    failures.append(repr(exc))

    async def watch_served_certificate() -> None:
        port = int(hook.url.rsplit(":", 1)[1])
        while not stop_flag.is_set():
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=hook.client_ssl())
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            served.add(x509.load_der_x509_certificate(der).serial_number)
            writer.close()
            await asyncio.sleep(0.05)

    # The CA stays; the serving certificate is replaced five times while 4 clients send
    # reviews — two on kept-alive connections, two opening a new one per request.
    tasks = [asyncio.create_task(client(fresh)) for fresh in (False, False, True, True)]
    tasks.append(asyncio.create_task(watch_served_certificate()))
    ca_files = (cert_dir / "ca.crt").read_bytes(), (cert_dir / "ca.key").read_bytes()
    issued = []
    for _ in range(5):
        await asyncio.sleep(0.6)
        proc = await asyncio.create_subprocess_exec(
            BIN / "gpushift-certs", "issue", "--out-dir", str(cert_dir), "--ip", "127.0.0.1",
            "--reuse-ca", stdout=asyncio.subprocess.DEVNULL)
        assert await proc.wait() == 0
        issued.append(x509.load_pem_x509_certificate(
            (cert_dir / "tls.crt").read_bytes()).serial_number)
    await asyncio.sleep(0.8)
    stop_flag.set()
    await asyncio.gather(*tasks)
    assert stop(hook) == 0
    assert ((cert_dir / "ca.crt").read_bytes(), (cert_dir / "ca.key").read_bytes()) == ca_files
    assert failures == []
    assert ok > 50
    assert issued[-1] in served, "the last certificate was never served"
    assert len(served & set(issued)) >= 3, "new connections did not pick up rotations"


async def test_starts_unready_without_certificates_and_becomes_ready(tmp_path):
    empty = tmp_path / "later"
    empty.mkdir()
    hook = start_webhook(tmp_path, empty, wait_ready=False)
    try:
        await asyncio.sleep(0.5)
        assert hook.process.poll() is None
        assert "starting without a valid certificate" in hook.logs()
        issue_certs(empty)
        wait_until_ready(hook)
    finally:
        assert stop(hook) == 0


async def test_mismatched_key_is_refused_and_old_certificate_kept(webhook):
    ca = new_ca("other", dt.timedelta(days=1))
    a, b = new_serving_cert(ca, ["localhost"]), new_serving_cert(ca, ["localhost"])
    (webhook.cert_dir / "tls.crt").write_bytes(a.cert_pem)
    (webhook.cert_dir / "tls.key").write_bytes(b.key_pem)
    await asyncio.sleep(0.6)
    assert "does not belong to tls.crt" in webhook.logs()
    # The original CA still verifies: the old certificate is still served.
    async with aiohttp.ClientSession() as s:
        async with s.get(webhook.url + "/readyz", ssl=webhook.client_ssl()) as r:
            assert r.status == 200
    write_cert_dir(webhook.cert_dir, ca.cert_pem, a)


def test_invalid_config_exits_2_with_a_clear_message(tmp_path, cert_dir):
    config = tmp_path / "config.yaml"
    config.write_text("sidecar:\n  imag: x\n")
    result = subprocess.run([BIN / "gpushift-webhook", "serve", "--cert-dir", str(cert_dir),
                             "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "sidecar: unknown key(s) imag" in result.stderr
    ok = subprocess.run([BIN / "gpushift-webhook", "check-config", "--config",
                         str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert ok.returncode == 2 and "cannot read" in ok.stderr
