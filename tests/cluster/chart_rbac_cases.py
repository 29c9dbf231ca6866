"""RBAC questions to the real authorizer (SubjectAccessReview) for the chart's cluster
tests: one `Access` per question with the expected answer, the polled check of a list of
them, and what the sidecar's, the webhook's and the migration guard's ServiceAccounts may
and may not do."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from chart_tools import (
    FULLNAME,
    GUARD_LEASE,
    OTHER_NS,
    OTHER_RELEASE_OBJECTS,
    RELEASE_NS,
    TLS_SECRET,
    USER_NS,
    WEBHOOK_SA,
)


@dataclass(frozen=True)
class Access:
    """One question to the authorizer and the expected answer."""

    sa: tuple[str, str]  # (namespace, name) of a ServiceAccount
    verb: str
    resource: str
    group: str = ""
    namespace: str = ""  # "" = all namespaces / cluster-scoped
    name: str = ""
    allowed: bool = True

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        obj = f"{self.resource}.{self.group}" if self.group else self.resource
        return (f"{self.sa[0]}:{self.sa[1]} {self.verb} {obj}"
                f"{'/' + self.name if self.name else ''} {where}: "
                f"expected {'allowed' if self.allowed else 'DENIED'}")


def allowed(authz: Any, a: Access) -> bool:
    ns, name = a.sa
    review = authz.create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{ns}:{name}",
            # What a real ServiceAccount token carries (system:authenticated included, so
            # the default discovery roles apply as in a cluster).
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                       "system:authenticated"],
            "resourceAttributes": {"verb": a.verb, "group": a.group, "resource": a.resource,
                                   "namespace": a.namespace, "name": a.name},
        },
    })
    return bool(review.status.allowed)


def assert_access(authz: Any, cases: list[Access], timeout: float = 20) -> None:
    """All answers as expected; polled, since RBAC changes reach the authorizer through
    informers (and aggregation through a controller) a moment later."""

    def wrong() -> list[str]:
        return [str(a) for a in cases if allowed(authz, a) != a.allowed]

    deadline = time.monotonic() + timeout
    bad = wrong()
    while bad and time.monotonic() < deadline:
        time.sleep(0.25)
        bad = wrong()
    assert not bad, "the authorizer answered otherwise:\n  " + "\n  ".join(bad)
    print(f"{len(cases)} access checks as expected "
          f"({sum(a.allowed for a in cases)} allowed, {sum(not a.allowed for a in cases)} denied)")


def sidecar_cases(sa: tuple[str, str], other_ns: str) -> list[Access]:
    """What the sidecar under `sa` may and may not do."""
    ns = sa[0]
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    yes = [
        Access(sa, "get", **nb, namespace=ns, name="alice"),
        Access(sa, "patch", **nb, namespace=ns, name="alice"),
        Access(sa, "get", "pods", namespace=ns, name="alice-0"),
        Access(sa, "create", "events", namespace=ns),
        Access(sa, "create", "events", group="events.k8s.io", namespace=ns),
    ]
    no = [
        Access(sa, "patch", **nb, namespace=other_ns, name="bob"),
        Access(sa, "get", **nb, namespace=other_ns, name="bob"),
        Access(sa, "list", **nb),
        Access(sa, "list", **nb, namespace=ns),
        Access(sa, "delete", **nb, namespace=ns, name="alice"),
        Access(sa, "update", **nb, namespace=ns, name="alice"),
        Access(sa, "get", **nb, name="alice"),
        Access(sa, "get", "pods", namespace=other_ns, name="bob-0"),
        Access(sa, "get", "secrets", namespace=ns, name="anything"),
        Access(sa, "delete", "pods", namespace=ns, name="alice-0"),
        Access(sa, "create", "pods", namespace=ns),
        Access(sa, "list", "nodes"),
        Access(sa, "update", "mutatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "patch", "mutatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "create", "clusterrolebindings", group="rbac.authorization.k8s.io"),
    ]
    return yes + [dataclasses.replace(a, allowed=False) for a in no]


def guard_cases(*, granted: bool) -> list[Access]:
    sa = WEBHOOK_SA
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    cases = [
        Access(sa, "get", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "list", **nb),
        Access(sa, "watch", **nb),
        Access(sa, "patch", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "patch", **nb, namespace=OTHER_NS, name="bob"),
        Access(sa, "list", "pods"),
        Access(sa, "watch", "pods"),
        Access(sa, "delete", "pods", namespace=USER_NS, name="alice-0"),
        Access(sa, "create", "events", namespace=USER_NS),
        Access(sa, "get", "leases", group="coordination.k8s.io", namespace=RELEASE_NS,
               name=GUARD_LEASE),
        Access(sa, "update", "leases", group="coordination.k8s.io", namespace=RELEASE_NS,
               name=GUARD_LEASE),
    ]
    return [dataclasses.replace(a, allowed=granted) for a in cases]


def webhook_cases() -> list[Access]:
    sa = WEBHOOK_SA
    mwc = {"resource": "mutatingwebhookconfigurations", "group": "admissionregistration.k8s.io"}
    yes = [
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "update", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "create", "secrets", namespace=RELEASE_NS),
        Access(sa, "get", **mwc, name=FULLNAME),
        Access(sa, "patch", **mwc, name=FULLNAME),
        Access(sa, "create", "events", namespace=RELEASE_NS),
    ]
    no = [
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name="other-secret"),
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name=f"{OTHER_RELEASE_OBJECTS}-tls"),
        Access(sa, "list", "secrets", namespace=RELEASE_NS),
        Access(sa, "get", "secrets", namespace=USER_NS, name=TLS_SECRET),
        Access(sa, "get", "secrets", namespace="kube-system", name=TLS_SECRET),
        Access(sa, "list", "secrets"),
        Access(sa, "delete", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "patch", **mwc, name=OTHER_RELEASE_OBJECTS),
        Access(sa, "list", **mwc),
        Access(sa, "delete", **mwc, name=FULLNAME),
        Access(sa, "create", **mwc),
        Access(sa, "patch", "validatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "create", "pods", namespace=RELEASE_NS),
        Access(sa, "create", "pods", namespace=USER_NS),
        Access(sa, "create", "clusterrolebindings", group="rbac.authorization.k8s.io"),
        Access(sa, "create", "rolebindings", group="rbac.authorization.k8s.io",
               namespace=RELEASE_NS),
        Access(sa, "escalate", "clusterroles", group="rbac.authorization.k8s.io",
               name=f"{FULLNAME}-webhook"),
        Access(sa, "bind", "clusterroles", group="rbac.authorization.k8s.io", name="cluster-admin"),
        Access(sa, "impersonate", "serviceaccounts", namespace=USER_NS, name="default-editor"),
        Access(sa, "create", "serviceaccounts/token", namespace=USER_NS, name="default-editor"),
        Access(sa, "list", "nodes"),
    ]
    return yes + [dataclasses.replace(a, allowed=False) for a in no]
