import datetime as dt
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gpushift_certs import cli
from gpushift_certs.issue import (
    BACKDATE,
    KeyPair,
    new_ca,
    new_serving_cert,
    service_dns_names,
    utcnow,
    write_cert_dir,
)


def verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    cert.verify_directly_issued_by(ca)


def test_ca_and_serving_certificate():
    now = utcnow()
    ca = new_ca("gpushift-ca", dt.timedelta(days=30), now)
    serving = new_serving_cert(ca, service_dns_names("gpushift-webhook", "gpushift"),
                               ["127.0.0.1"], dt.timedelta(days=7), now)
    cert = serving.cert
    verify_signed_by(cert, ca.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "gpushift-webhook", "gpushift-webhook.gpushift", "gpushift-webhook.gpushift.svc",
        "gpushift-webhook.gpushift.svc.cluster.local"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.not_valid_before_utc <= now - BACKDATE + dt.timedelta(seconds=1)
    lifetime = cert.not_valid_after_utc - now
    assert lifetime == pytest.approx(dt.timedelta(days=7), abs=dt.timedelta(seconds=1))
    basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert isinstance(serving.private_key(), ec.EllipticCurvePrivateKey)


def test_serving_certificate_never_outlives_its_ca():
    ca = new_ca("short", dt.timedelta(days=2))
    serving = new_serving_cert(ca, ["x"], valid_for=dt.timedelta(days=365))
    assert serving.cert.not_valid_after_utc <= ca.cert.not_valid_after_utc


def test_a_name_is_required():
    ca = new_ca("ca", dt.timedelta(days=1))
    with pytest.raises(ValueError, match="at least one"):
        new_serving_cert(ca, [])


def test_write_cert_dir_modes(tmp_path):
    ca = new_ca("ca", dt.timedelta(days=1))
    serving = new_serving_cert(ca, ["x"])
    write_cert_dir(tmp_path, ca.cert_pem, serving)
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert (tmp_path / "tls.crt").read_bytes() == serving.cert_pem
    assert (tmp_path / "ca.crt").read_bytes() == ca.cert_pem
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_issue_and_reuse_ca(tmp_path, capsys):
    assert cli.main(["issue", "--out-dir", str(tmp_path), "--service", "gpushift-webhook",
                     "--namespace", "gpushift", "--ip", "127.0.0.1", "--days", "3"]) == 0
    assert "valid until" in capsys.readouterr().out
    ca = KeyPair((tmp_path / "ca.crt").read_bytes(), (tmp_path / "ca.key").read_bytes())
    first = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    verify_signed_by(first, ca.cert)
    assert cli.main(["issue", "--out-dir", str(tmp_path), "--dns", "localhost",
                     "--reuse-ca"]) == 0
    second = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert second.serial_number != first.serial_number
    verify_signed_by(second, ca.cert)


def test_cli_needs_a_name(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["issue", "--out-dir", str(tmp_path)])
    assert cli.main(["issue", "--out-dir", str(tmp_path / "none"), "--dns", "x",
                     "--reuse-ca"]) == 2
