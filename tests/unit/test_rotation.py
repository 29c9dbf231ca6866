"""The self-managed rotation plan, walked through a CA's whole life with a fake clock."""

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gpushift_certs.issue import utcnow
from gpushift_certs.rotation import CertState, RotationPolicy, plan, split_pem

POLICY = RotationPolicy(dns_names=["gpushift-webhook.gpushift.svc"], ips=["127.0.0.1"],
                        ca_validity=dt.timedelta(days=30),
                        serving_validity=dt.timedelta(days=9),
                        propagation_delay=dt.timedelta(minutes=1))
DAY = dt.timedelta(days=1)


def trusted_by(state: CertState, bundle: bytes) -> bool:
    """Would a client holding `bundle` accept the serving certificate of `state`?"""
    serving = state.serving.cert
    for pem in split_pem(bundle):
        try:
            serving.verify_directly_issued_by(x509.load_pem_x509_certificate(pem))
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def test_first_plan_issues_everything_and_round_trips_through_the_secret():
    now = utcnow()
    p = plan(None, POLICY, now)
    assert p.changes == ["issued a new CA and serving certificate"]
    restored = CertState.from_secret_data(p.state.to_secret_data())
    assert restored == p.state
    assert plan(restored, POLICY, now + DAY, restored.trusted_bundle()).changes == []


def test_serving_renewed_at_two_thirds_of_its_life():
    start = utcnow()
    state = plan(None, POLICY, start).state
    assert plan(state, POLICY, start + 5 * DAY).changes == []
    p = plan(state, POLICY, start + 6 * DAY + dt.timedelta(hours=1))
    assert p.changes == ["renewed the serving certificate (two thirds of its life passed)"]
    assert p.state.serving != state.serving and p.state.ca == state.ca


def test_changed_names_reissue_the_serving_certificate():
    state = plan(None, POLICY, utcnow()).state
    moved = RotationPolicy(dns_names=["other.gpushift.svc"], ips=[])
    p = plan(state, moved, utcnow())
    assert p.changes == ["renewed the serving certificate (names changed)"]


def test_ca_rotation_never_serves_a_certificate_the_published_bundle_does_not_trust():
    """Walk 60 days in 6-hour steps, publishing the bundle after every reconcile (as the
    loop does). At every step, the certificate served must verify against the caBundle
    the API server had *before* that step's publish (the worst case of propagation)."""
    now = utcnow()
    state = plan(None, POLICY, now).state
    published = state.trusted_bundle()
    changes: list[str] = []
    cas = {state.ca.cert_pem}
    while now < utcnow() + 60 * DAY:
        now += dt.timedelta(hours=6)
        p = plan(state, POLICY, now, published)
        changes += p.changes
        state = p.state
        assert trusted_by(state, published), f"untrusted serving certificate at {now}"
        assert now < state.serving.cert.not_valid_after_utc
        cas.add(state.ca.cert_pem)
        published = state.trusted_bundle()
    assert len(cas) >= 3, "the CA should have been replaced twice in 60 days"
    assert "made the next CA and added it to the trusted bundle" in changes
    assert "promoted the next CA and issued a serving certificate with it" in changes
    assert any(c.startswith("dropped") for c in changes), "expired CAs are dropped"


def test_next_ca_waits_until_published_and_the_delay_passed():
    start = utcnow()
    state = plan(None, POLICY, start).state
    due = start + 21 * DAY
    p = plan(state, POLICY, due, state.trusted_bundle())
    assert p.state.next_ca is not None and len(p.state.trusted) == 2
    unpublished = plan(p.state, POLICY, due + dt.timedelta(hours=1), state.trusted_bundle())
    assert unpublished.state.next_ca is not None, "not promoted before it is published"
    too_soon = plan(p.state, POLICY, due + dt.timedelta(seconds=5), p.state.trusted_bundle())
    assert too_soon.state.next_ca is not None, "not promoted before the delay"
    promoted = plan(p.state, POLICY, due + dt.timedelta(minutes=2), p.state.trusted_bundle())
    assert promoted.state.next_ca is None and promoted.state.ca == p.state.next_ca
    assert len(promoted.state.trusted) == 2, "the old CA stays trusted until it expires"


def test_damaged_secret_is_treated_as_missing():
    data = plan(None, POLICY, utcnow()).state.to_secret_data()
    assert CertState.from_secret_data(None) is None
    assert CertState.from_secret_data({k: v for k, v in data.items() if k != "tls.key"}) is None
    assert CertState.from_secret_data({**data, "ca.crt": "!!!"}) is None
    other = plan(None, POLICY, utcnow()).state.to_secret_data()
    assert CertState.from_secret_data({**data, "tls.crt": other["tls.crt"]}) is None
