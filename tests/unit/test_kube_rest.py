"""`gpushift_core.kube.rest`: the query names and argument checks (pure), and that the
cluster side loads nothing of the official client, whose import is CPU a new pod's
sidecar spent beside JupyterLab's start. The routes themselves are
checked by the real API server in tests/cluster/test_kube_rest_cluster.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpushift_core.kube.connection import ClusterAccess, Connection
from gpushift_core.kube.rest import CORE_V1, CUSTOM_OBJECTS, RestApi, query_name


@pytest.mark.parametrize(("keyword", "name"), [
    ("label_selector", "labelSelector"), ("field_selector", "fieldSelector"),
    ("_continue", "continue"), ("limit", "limit"), ("watch", "watch"),
    ("resource_version_match", "resourceVersionMatch"), ("dry_run", "dryRun"),
    ("allow_watch_bookmarks", "allowWatchBookmarks"), ("field_manager", "fieldManager"),
    ("timeout_seconds", "timeoutSeconds"),
])
def test_query_names_are_the_api_servers(keyword: str, name: str) -> None:
    assert query_name(keyword) == name


def test_arguments_are_checked_before_anything_is_sent() -> None:
    # Port 1 refuses connections: a request that got as far as sending would fail
    # with a connection error, not the TypeError asked for.
    api = RestApi(Connection(ClusterAccess(server="http://127.0.0.1:1")), CORE_V1)
    with pytest.raises(TypeError, match="needs name, namespace"):
        api.read_namespaced_pod("p")
    with pytest.raises(TypeError, match="too many arguments"):
        api.read_namespaced_pod("p", "ns", {}, {})
    with pytest.raises(TypeError, match="takes no body"):
        api.read_namespaced_pod("p", "ns", {"a": 1})
    with pytest.raises(TypeError, match="too many arguments"):
        api.create_namespaced_event("ns", {"a": 1}, body={"b": 2})
    with pytest.raises(AttributeError, match="no route"):
        _ = RestApi(api.connection, CUSTOM_OBJECTS).read_namespaced_pod


def test_the_cluster_side_loads_nothing_of_the_official_client() -> None:
    # In a fresh interpreter: what importing and using the client loads. (The import
    # contract in pyproject.toml checks the imports statically; this, at run time.)
    probe = """
import json, sys
from gpushift_core.kube import KubeApi
from gpushift_core.kube.connection import ClusterAccess, Connection
from gpushift_core.kube.rest import ADMISSION_V1, COORDINATION_V1, CORE_V1, CUSTOM_OBJECTS
api = KubeApi(Connection(ClusterAccess(server="http://127.0.0.1:1")))
for group, routes in ((api.core_v1, CORE_V1), (api.custom_objects, CUSTOM_OBJECTS),
                      (api.coordination_v1, COORDINATION_V1),
                      (api.admission_v1, ADMISSION_V1)):
    for name in routes:
        getattr(group, name)
import gpushift_sidecar.service, gpushift_sidecar.serve, gpushift_webhook.cert_objects
import gpushift_webhook.cli
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("kubernetes", "pydantic", "requests_oauthlib"))))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == []
