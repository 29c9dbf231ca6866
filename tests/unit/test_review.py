import base64
import json

import pytest
from kubeflow_pods import admission_review, notebook_pod

from gpushift_core.patches import apply
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.injection import Outcome
from gpushift_webhook.review import BadRequest, review

CONFIG = WebhookConfig()


def test_response_carries_uid_and_base64_json_patch():
    body = admission_review(notebook_pod())
    answer, decision = review(body, CONFIG)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops == decision.operations
    patched = apply(body["request"]["object"], ops)
    assert patched["spec"]["initContainers"][0]["name"] == "gpushift-sidecar"
    assert "warnings" not in response


def test_warning_is_in_response():
    answer, _ = review(admission_review(notebook_pod(workspace=False)), CONFIG)
    assert "will not survive a move" in answer["response"]["warnings"][0]


def test_skipped_pod_has_no_patch():
    pod = notebook_pod()
    pod["metadata"]["labels"].pop("notebook-name")
    answer, decision = review(admission_review(pod), CONFIG)
    assert decision.outcome is Outcome.SKIPPED
    assert answer["response"] == {"uid": answer["response"]["uid"], "allowed": True}


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_only_create_is_mutated(operation):
    answer, decision = review(admission_review(notebook_pod(), operation=operation), CONFIG)
    assert decision.outcome is Outcome.SKIPPED and "patch" not in answer["response"]


def _with(path, value):
    body = admission_review(notebook_pod())
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


@pytest.mark.parametrize(("body", "error"), [
    ([], "invalid_review"),
    ("text", "invalid_review"),
    (_with(("apiVersion",), "admission.k8s.io/v1beta1"), "unsupported_api_version"),
    (_with(("kind",), "Pod"), "invalid_review"),
    (_with(("request",), KeyError), "invalid_review"),
    (_with(("request",), []), "invalid_review"),
    (_with(("request", "uid"), KeyError), "invalid_review"),
    (_with(("request", "uid"), ""), "invalid_review"),
    (_with(("request", "uid"), 7), "invalid_review"),
    (_with(("request", "kind"), {"group": "apps", "version": "v1", "kind": "Deployment"}),
     "not_a_pod"),
    (_with(("request", "kind"), "Pod"), "not_a_pod"),
    (_with(("request", "object"), KeyError), "not_a_pod"),
    (_with(("request", "object"), {"kind": "Service"}), "not_a_pod"),
    (_with(("request", "operation"), 5), "invalid_review"),
])
def test_malformed_reviews_are_bad_requests(body, error):
    with pytest.raises(BadRequest) as info:
        review(body, CONFIG)
    assert info.value.error == error and info.value.detail
