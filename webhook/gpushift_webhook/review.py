"""The pure core: an AdmissionReview request in, an AdmissionReview response out.

Two kinds of failure, as in kopf:
  * the request itself is malformed -> `BadRequest`, which the HTTP adapter answers 400;
  * the pod is one we cannot or should not change -> an *allowed* response without a
    patch (with a warning where the user should know). gpushift never denies a pod.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gpushift_core import labels, patches
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.injection import Decision, Outcome, plan_injection

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """The body is not an AdmissionReview we can answer."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


def review(body: object, config: WebhookConfig,
           server_types: Mapping[tuple[str, str], str] | None = None,
           ) -> tuple[dict[str, Any], Decision]:
    """Answer one AdmissionReview. Raises `BadRequest` for a malformed one.

    `server_types`: (namespace, Notebook name) -> the Notebook's server type, as the
    webhook's cache knows them (`server_types.ServerTypeCache`; a dict read, no I/O)."""
    request = _request(body)
    uid = request["uid"]
    decision = decide(request, config, server_types).about(
        request.get("namespace") or "", _pod_name(request["object"]))
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if decision.operations:
        response["patchType"] = "JSONPatch"
        response["patch"] = patches.encode(decision.operations)
    if decision.warnings:
        response["warnings"] = decision.warnings
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}, decision


def decide(request: Mapping[str, Any], config: WebhookConfig,
           server_types: Mapping[tuple[str, str], str] | None = None) -> Decision:
    """The decision for a validated request; any bug of ours still admits the pod."""
    if request.get("operation", "CREATE") != "CREATE":
        return Decision(Outcome.SKIPPED, f"operation {request.get('operation')} is not CREATE")
    namespace = request.get("namespace") or ""
    pod = request["object"]
    try:
        metadata = pod.get("metadata")
        pod_labels = metadata.get("labels") if isinstance(metadata, dict) else None
        notebook = (pod_labels.get(labels.NOTEBOOK_NAME_LABEL)
                    if isinstance(pod_labels, dict) else None)
        server_type = (server_types.get((namespace, notebook))
                       if server_types is not None and isinstance(notebook, str) else None)
        return plan_injection(pod, namespace, config, server_type)
    except Exception as exc:
        # Never block a pod because of a bug of ours: admit it unchanged and say so.
        log.exception("injection failed")
        return Decision(Outcome.ERROR, f"internal error: {type(exc).__name__}",
                        warnings=["gpushift: the GPU optimizer is off for this pod "
                                  "(internal error, see the webhook's log)"])


def _request(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("invalid_review", "the body must be a JSON object")
    if body.get("apiVersion") != API_VERSION:
        raise BadRequest("unsupported_api_version",
                         f"apiVersion must be {API_VERSION}, got {body.get('apiVersion')!r}")
    if body.get("kind") != KIND:
        raise BadRequest("invalid_review", f"kind must be {KIND}, got {body.get('kind')!r}")
    request = body.get("request")
    if not isinstance(request, dict):
        raise BadRequest("invalid_review", "request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadRequest("invalid_review", "request.uid is missing or empty")
    # The API server sends a string (or nothing); anything else would reach the excluded
    # namespaces check and the log line as garbage.
    namespace = request.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise BadRequest("invalid_review", "request.namespace must be a string")
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        raise BadRequest("not_a_pod", f"request.kind must be core/v1 Pod, got {kind!r}")
    obj = request.get("object")
    if not isinstance(obj, dict) or obj.get("kind", "Pod") != "Pod":
        raise BadRequest("not_a_pod", "request.object is missing or not a Pod")
    operation = request.get("operation", "CREATE")
    if not isinstance(operation, str):
        raise BadRequest("invalid_review", "request.operation must be a string")
    return request


def _pod_name(pod: Mapping[str, Any]) -> str:
    """metadata.name, or generateName before the API server names the pod; "" when neither
    is a string: a malformed pod is still admitted, and Kubernetes refuses it after us."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return ""
    for key in ("name", "generateName"):
        if isinstance(name := metadata.get(key), str) and name:
            return name
    return ""
