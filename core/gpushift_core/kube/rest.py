"""The REST calls the cluster side makes, as plain JSON over `connection.Connection`,
named as the official client's typed APIs name them.

The typed APIs of the client (kubernetes 35 and later) are pydantic-validated classes:
making `CoreV1Api` costs about 0.75 s of CPU and `CustomObjectsApi` 0.2 s, at every start
of every process that makes one. A notebook pod's sidecar made both while a move's new
pod started, beside JupyterLab's own start on the same cores (1.5 s of the sidecar's
CPU in the 2.4 s from the notebook container's start to the server's extensions loading,
measured on the local cluster), and under the sidecar's 250m CPU limit that is seconds
of a throttled start. Everything gpushift reads or writes is plain JSON anyway
(`KubeApi.read_json`), so the typed models bought nothing; the client's package is not
used at all any more (see `connection`).

A `RestApi` offers the methods gpushift calls under the typed APIs' names, with their
positional parameters in the same order, so call sites and `transport` (which calls
them in a worker thread, `_preload_content`, `_request_timeout`, `watch=True`) read as
with the typed client: `api.core_v1.read_namespaced_pod(name, namespace)`. Keyword
arguments are the query (`label_selector` → `labelSelector`, `_continue` → `continue`);
a non-2xx answer raises `connection.ApiError`, which carries the API's Status as the
typed API's `ApiException` did (`KubeError.from_api` reads it). A method gpushift does
not call is an AttributeError: add its route here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gpushift_core.kube.connection import Connection

__all__ = ["ADMISSION_V1", "COORDINATION_V1", "CORE_V1", "CUSTOM_OBJECTS", "JSON_PATCH",
           "RestApi", "Route", "query_name"]

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Route:
    """One API method: its HTTP method, its path with `{placeholders}`, and the names of
    its positional parameters in the typed API's order (a body, where the method takes
    one, is the positional argument after them, or `body=`)."""

    method: str
    path: str
    params: tuple[str, ...]


def _namespaced(kind: str, group: str = "") -> dict[str, Route]:
    """read/create/replace/delete/list of a namespaced kind (`pods`) of `group` ("" for
    core/v1, e.g. "coordination.k8s.io/v1")."""
    base = (f"/apis/{group}" if group else "/api/v1") + f"/namespaces/{{namespace}}/{kind}"
    return {
        "read": Route("GET", base + "/{name}", ("name", "namespace")),
        "create": Route("POST", base, ("namespace",)),
        "replace": Route("PUT", base + "/{name}", ("name", "namespace")),
        "delete": Route("DELETE", base + "/{name}", ("name", "namespace")),
        "list": Route("GET", base, ("namespace",)),
    }


def _methods(singular: str, routes: dict[str, Route], verbs: tuple[str, ...]) -> dict[str, Route]:
    return {f"{verb}_namespaced_{singular}": routes[verb] for verb in verbs}


CORE_V1: Mapping[str, Route] = {
    **_methods("pod", _namespaced("pods"), ("read", "create", "delete")),
    **_methods("event", _namespaced("events"), ("create", "list")),
    **_methods("resource_quota", _namespaced("resourcequotas"), ("list",)),
    **_methods("config_map", _namespaced("configmaps"), ("read", "create", "replace")),
    **_methods("secret", _namespaced("secrets"), ("read", "create", "replace", "delete")),
    "list_namespace": Route("GET", "/api/v1/namespaces", ()),
    "list_node": Route("GET", "/api/v1/nodes", ()),
    "list_pod_for_all_namespaces": Route("GET", "/api/v1/pods", ()),
}
"""The core/v1 methods gpushift calls (`CoreV1Api`'s names)."""

_CUSTOM = "/apis/{group}/{version}"
CUSTOM_OBJECTS: Mapping[str, Route] = {
    "list_cluster_custom_object": Route("GET", _CUSTOM + "/{plural}",
                                        ("group", "version", "plural")),
    "get_namespaced_custom_object": Route(
        "GET", _CUSTOM + "/namespaces/{namespace}/{plural}/{name}",
        ("group", "version", "namespace", "plural", "name")),
    "patch_namespaced_custom_object": Route(
        "PATCH", _CUSTOM + "/namespaces/{namespace}/{plural}/{name}",
        ("group", "version", "namespace", "plural", "name")),
}
"""The custom-object methods (`CustomObjectsApi`'s names): Notebooks."""

COORDINATION_V1: Mapping[str, Route] = _methods(
    "lease", _namespaced("leases", "coordination.k8s.io/v1"), ("read", "create", "replace"))
"""Leases (`CoordinationV1Api`'s names): the webhook Deployment's leader election."""

_MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
ADMISSION_V1: Mapping[str, Route] = {
    f"{verb}_mutating_webhook_configuration": Route(method, _MWC, ("name",))
    for verb, method in (("read", "GET"), ("patch", "PATCH"), ("delete", "DELETE"))
}
"""The webhook's own MutatingWebhookConfiguration (`AdmissionregistrationV1Api`'s names)."""


def query_name(keyword: str) -> str:
    """The API's query parameter for a typed-API keyword: `label_selector` ->
    `labelSelector`, `_continue` -> `continue` (`continue` is a Python keyword)."""
    if keyword == "_continue":
        return "continue"
    first, *rest = keyword.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


class RestApi:
    """The methods of `routes` over `connection` (see the module's docstring)."""

    def __init__(self, connection: Connection, routes: Mapping[str, Route]) -> None:
        self.connection = connection
        self.routes = routes

    def __getattr__(self, name: str) -> Callable[..., Any]:
        route = self.__dict__["routes"].get(name)
        if route is None:
            raise AttributeError(f"{name}: no route for it in gpushift_core.kube.rest")

        def method(*args: Any, **kwargs: Any) -> Any:
            return self.request(route, *args, **kwargs)

        method.__name__ = name
        return method

    def request(self, route: Route, *args: Any, _preload_content: bool = True,
                _request_timeout: Any = None, _content_type: str | None = None,
                body: Any = None, **query: Any) -> Any:
        """Send one request: the answer's JSON, or with `_preload_content=False` the
        urllib3 response, its body unread (a watch is read as it comes). A non-2xx
        answer raises `ApiError`."""
        count = len(route.params)
        if len(args) > count + 1 or (len(args) == count + 1 and body is not None):
            raise TypeError(f"{route.method} {route.path}: too many arguments")
        if len(args) < count:
            raise TypeError(f"{route.method} {route.path}: needs {', '.join(route.params)}")
        if len(args) > count:
            body = args[count]
        if body is not None and route.method not in _BODY_METHODS:
            raise TypeError(f"{route.method} {route.path} takes no body")
        path = route.path.format(**{name: quote(str(value), safe="")
                                    for name, value in zip(route.params, args, strict=False)})
        headers = {"Accept": JSON}
        data = None
        if body is not None:
            headers["Content-Type"] = _content_type or (
                JSON_PATCH if route.method == "PATCH" else JSON)
            data = json.dumps(body).encode()
        params = [(query_name(key), value) for key, value in query.items()
                  if value is not None]
        response = self.connection.request(route.method, path, query=params, body=data,
                                           headers=headers, timeout=_request_timeout,
                                           preload=_preload_content)
        if not _preload_content:
            return response
        return json.loads(response.data) if response.data else None
