"""gpushift_core.kube's retry decisions, against a fake API (the real API server is in
tests/cluster/test_sidecar_patching_unreachable.py): what is repeated after a connection failure,
what is not, and how a patch whose answer was lost is checked."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3

from gpushift_core import kube
from gpushift_core.kube import KubeApi, KubeError, PatchConflictError, Retry, Unreachable
from gpushift_core.kube.connection import ApiError, ClusterAccess, Connection
from gpushift_core.patches import apply

# The fake replaces the API groups: nothing is ever sent here.
NOWHERE = Connection(ClusterAccess(server="http://127.0.0.1:1"))
FAST = Retry(deadline_seconds=2.0, initial_seconds=0.01, max_seconds=0.02)


def refused() -> Exception:
    pool = urllib3.HTTPSConnectionPool("127.0.0.1", 1)
    return urllib3.exceptions.NewConnectionError(pool, "Connection refused")  # type: ignore[arg-type]


def lost() -> Exception:
    return urllib3.exceptions.ProtocolError("Connection aborted.",
                                            ConnectionResetError("reset by peer"))


def status(code: int, body: dict[str, Any] | None = None) -> ApiError:
    return ApiError(code, "Reason", json.dumps(
        body or {"kind": "Status", "reason": "Reason", "message": "m", "code": code}))


class FakeNotebooks:
    """get/patch of one Notebook; `faults` are raised in order before (or, tagged
    "after", after) a call takes effect."""

    def __init__(self) -> None:
        self.nb: dict[str, Any] = {
            "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
            "metadata": {"name": "nb", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "a"}]}}},
        }
        self.faults: list[tuple[str, str, Exception]] = []
        self.calls: list[str] = []

    def _fault(self, call: str, when: str) -> None:
        if self.faults and self.faults[0][:2] == (call, when):
            raise self.faults.pop(0)[2]

    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        self.calls.append("get")
        self._fault("get", "before")
        return json.loads(json.dumps(self.nb))  # type: ignore[no-any-return]

    def patch_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                       name: str, body: list[dict[str, Any]],
                                       **kw: Any) -> dict[str, Any]:
        assert kw["_content_type"] == "application/json-patch+json"
        assert kw["field_manager"] == "gpushift-sidecar"
        assert body[0]["op"] == "test"
        self.calls.append("patch")
        self._fault("patch", "before")
        if body[0]["value"] != self.nb["metadata"]["resourceVersion"]:
            raise status(422, {"kind": "Status", "reason": "Invalid", "details": {},
                               "message": "the server rejected our request due to an "
                                          "error in our request", "code": 422})
        self.nb = apply(self.nb, body)
        self.nb["metadata"]["resourceVersion"] = str(int(self.nb["metadata"]
                                                         ["resourceVersion"]) + 1)
        self._fault("patch", "after")
        return json.loads(json.dumps(self.nb))  # type: ignore[no-any-return]


@pytest.fixture
def fake() -> FakeNotebooks:
    return FakeNotebooks()


@pytest.fixture
def api(fake: FakeNotebooks) -> KubeApi:
    api = KubeApi(NOWHERE, retry=FAST,
                  component="gpushift-sidecar")
    api.custom_objects = fake  # type: ignore[assignment]
    return api


def set_image(image: str) -> Any:
    def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                 "value": image}]
    return build


async def test_read_is_retried_while_the_connection_is_refused(api, fake):
    fake.faults = [("get", "before", refused()), ("get", "before", refused())]
    nb = await api.get_notebook("ns", "nb")
    assert nb["metadata"]["name"] == "nb" and fake.calls == ["get"] * 3


async def test_read_is_retried_on_503_and_500_and_lost_connections(api, fake):
    fake.faults = [("get", "before", status(503)), ("get", "before", status(500)),
                   ("get", "before", lost())]
    await api.get_notebook("ns", "nb")
    assert fake.calls == ["get"] * 4


async def test_refusals_are_not_retried(api, fake):
    fake.faults = [("get", "before", status(403, {"reason": "Forbidden", "message": "no",
                                                  "details": {"kind": "notebooks"}}))]
    with pytest.raises(KubeError) as err:
        await api.get_notebook("ns", "nb")
    assert (err.value.status, err.value.reason, err.value.message) == (403, "Forbidden", "no")
    assert err.value.details == {"kind": "notebooks"} and fake.calls == ["get"]


async def test_unreachable_after_the_deadline(fake):
    api = KubeApi(NOWHERE,
                  retry=Retry(deadline_seconds=0.2, initial_seconds=0.05, max_seconds=0.05),
                  component="gpushift-sidecar")
    api.custom_objects = fake  # type: ignore[assignment]
    fake.faults = [("get", "before", refused())] * 100
    with pytest.raises(Unreachable) as err:
        await api.get_notebook("ns", "nb")
    assert err.value.status == 0 and "NewConnectionError" in err.value.message
    assert 2 <= len(fake.calls) <= 6


async def test_patch_not_sent_is_retried(api, fake):
    fake.faults = [("patch", "before", refused())]
    result = await api.patch_notebook("ns", "nb", set_image("b"))
    assert result.attempts == 1 and fake.calls == ["get", "patch", "patch"]
    assert fake.nb["spec"]["template"]["spec"]["containers"][0]["image"] == "b"


async def test_patch_whose_answer_was_lost_is_found_landed(api, fake):
    fake.faults = [("patch", "after", lost())]
    result = await api.patch_notebook("ns", "nb", set_image("b"))
    # Not sent again: read back and recognised as landed.
    assert fake.calls == ["get", "patch", "get"] and result.attempts == 1
    assert result.notebook["metadata"]["resourceVersion"] == "2"


@pytest.mark.parametrize("fault", [lost(), status(500), status(504)])
async def test_patch_that_may_not_have_landed_is_read_back_and_rebuilt(api, fake, fault):
    fake.faults = [("patch", "before", fault)]
    result = await api.patch_notebook("ns", "nb", set_image("b"))
    assert fake.calls == ["get", "patch", "get", "get", "patch"]
    assert result.attempts == 2 and fake.nb["metadata"]["resourceVersion"] == "2"


async def test_stale_patch_is_rebuilt_on_a_fresh_read(api, fake):
    seen: list[str] = []

    def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        seen.append(nb["metadata"]["resourceVersion"])
        if len(seen) == 1:  # someone else writes between our read and our patch
            fake.nb["metadata"]["resourceVersion"] = "7"
        return set_image("b")(nb)

    result = await api.patch_notebook("ns", "nb", build)
    assert seen == ["1", "7"] and result.attempts == 2
    # The builder gave no test: one was put first, with the version it read.
    assert result.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                                    "value": "7"}


async def test_conflicts_give_up_after_the_attempts(api, fake):
    def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        fake.nb["metadata"]["resourceVersion"] += "0"
        return set_image("b")(nb)

    with pytest.raises(PatchConflictError) as err:
        await api.patch_notebook("ns", "nb", build, attempts=3)
    assert err.value.attempts == 3 and err.value.status == 422
    assert fake.calls == ["get", "patch"] * 3


async def test_async_builder_and_no_change(api, fake):
    async def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]

    result = await api.patch_notebook("ns", "nb", build)
    assert not result.changed and fake.calls == ["get"]


async def test_set_annotation_adds_and_removes(api, fake):
    await api.set_annotation("ns", "nb", "gpushift.io/notebook-migration", "{}")
    assert fake.nb["metadata"]["annotations"] == {"gpushift.io/notebook-migration": "{}"}
    await api.set_annotation("ns", "nb", "gpushift.io/notebook-migration", None)
    assert fake.nb["metadata"]["annotations"] == {}


async def test_annotations_that_would_restart_the_pod_are_refused(api, fake):
    assert kube.copied_to_pod("gpushift.io/migration")
    assert not kube.copied_to_pod("notebooks.kubeflow.org/last-activity")
    assert not kube.copied_to_pod("kubectl.kubernetes.io/last-applied-configuration")
    with pytest.raises(ValueError, match="recreates the pod"):
        await api.set_annotation("ns", "nb", "gpushift.io/migration", "{}")
    assert fake.calls == []
    await api.set_annotation("ns", "nb", "gpushift.io/migration", "{}", restart_pod=True)
    assert fake.nb["metadata"]["annotations"] == {"gpushift.io/migration": "{}"}


def test_error_from_a_body_that_is_not_json():
    exc = ApiError(502, "Bad Gateway", "<html>upstream connect error</html>")
    err = KubeError.from_api(exc)
    assert (err.status, err.reason, err.details) == (502, "Bad Gateway", {})
    assert "upstream connect error" in err.message


def test_which_422_means_stale():
    stale = KubeError(422, "Invalid", "the server rejected our request", {})
    invalid = KubeError(422, "Invalid", "bad", {"causes": [{"field": "spec"}]})
    assert stale.stale and not invalid.stale
    assert KubeError(409, "Conflict", "x").stale
    assert issubclass(kube.Unreachable, kube.KubeError)
    assert issubclass(kube.MaybeSent, kube.KubeError)


async def test_event_type_is_checked(api):
    with pytest.raises(ValueError, match="event type"):
        await api.create_event("ns", {"metadata": {"name": "nb"}}, "R", "m", type="Info")
