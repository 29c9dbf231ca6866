"""NOT Kubeflow's notebook-controller: a stand-in for local tests only.

This is a stand-in for Kubeflow's notebook-controller (which the Go module proxy does not
serve); it reproduces its documented Notebook -> StatefulSet/Service behaviour for local
tests only. It was written from Kubeflow's documentation and DESIGN.md, not from Kubeflow's
source. The local control plane runs it when the real binary is missing
(``ControlPlane.notebook_controller_kind == "stand-in"``); a real binary named by
$GPUSHIFT_NOTEBOOK_CONTROLLER replaces it.

For each Notebook ``<name>`` (kubeflow.org/v1) in namespace ``<ns>`` it keeps:

- StatefulSet ``<name>`` (controller ownerReference to the Notebook): replicas 1, or 0 with
  the annotation ``kubeflow-resource-stopped``; serviceName ``<name>``; selector
  ``statefulset: <name>``; pod template labels = the Notebook's labels + ``statefulset`` and
  ``notebook-name``; template annotations = the Notebook's, minus keys containing "kubectl"
  or "notebook"; template spec = the Notebook's ``spec.template.spec`` with, on container 0,
  ``NB_PREFIX=/notebook/<ns>/<name>``, workingDir /home/jovyan and port 8888
  ``notebook-port`` when missing, and pod ``securityContext.fsGroup: 100`` when unset.
  Every reconcile writes the generated template over the StatefulSet's (an update with
  resourceVersion; the apiserver makes an identical one a no-op), so a patch to the
  Notebook makes kube-controller-manager's StatefulSet controller recreate pod <name>-0.
- Service ``<name>``: ClusterIP, port 80 ``http-<name>`` -> container 0's first port
  (8888), selector ``statefulset: <name>``, owned by the Notebook.
- Notebook status (status subresource): readyReplicas from the StatefulSet, containerState
  of pod <name>-0's first container, and the pod's conditions.

Not done (the real controller does these): Istio VirtualService (USE_ISTIO), culling of
idle notebooks, re-emitting pod/StatefulSet Events on the Notebook, leader election,
metrics, conversion or defaulting webhooks, any RBAC of its own (it runs as admin).

    python -m gpushift_testing.notebook_standin --kubeconfig K [--probe-addr 127.0.0.1:P]

Logs one JSON line per action to stdout. /readyz on --probe-addr answers 200 once its
watches (Notebooks, StatefulSets, pods) have listed once.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import functools
import http.server
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

BANNER = (
    "stand-in for Kubeflow's notebook-controller (which the Go module proxy does not serve); "
    "reproduces its documented Notebook -> StatefulSet/Service behaviour for local tests only"
)
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "notebooks"
STOP_ANNOTATION = "kubeflow-resource-stopped"
CONTAINER_PORT = 8888
SERVING_PORT = 80
FS_GROUP = 100
WORKING_DIR = "/home/jovyan"
TIMEOUT = 15  # seconds, each API request but watches

Watch: Any = watch.Watch  # untyped
Key = tuple[str, str]  # (namespace, notebook name)
Obj = dict[str, Any]


def describe(e: BaseException) -> str:
    """An exception in a line: for API errors the status and the server's message."""
    if isinstance(e, ApiException):
        try:
            message = json.loads(e.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(e.body)[:300]
        return f"{e.status} {e.reason}: {message}"
    return repr(e)[:500]


def log(action: str, **fields: Any) -> None:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    line = {"ts": now, "component": "notebook-standin", "action": action, **fields}
    print(json.dumps(line, default=str), flush=True)


# --------------------------------------------------------------------------- desired state


def owner_reference(nb: Obj) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Notebook",
        "name": nb["metadata"]["name"],
        "uid": nb["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_template(nb: Obj) -> Obj:
    meta = nb["metadata"]
    name, ns = meta["name"], meta["namespace"]
    labels = {**(meta.get("labels") or {}), "statefulset": name, "notebook-name": name}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if "kubectl" not in k and "notebook" not in k
    }
    spec = copy.deepcopy(nb["spec"]["template"]["spec"])
    c0 = spec["containers"][0]
    env = c0.setdefault("env", [])
    if not any(e.get("name") == "NB_PREFIX" for e in env):
        env.append({"name": "NB_PREFIX", "value": f"/notebook/{ns}/{name}"})
    if not c0.get("workingDir"):
        c0["workingDir"] = WORKING_DIR
    if not c0.get("ports"):
        c0["ports"] = [
            {"name": "notebook-port", "containerPort": CONTAINER_PORT, "protocol": "TCP"}
        ]
    security = spec.get("securityContext") or {}
    security.setdefault("fsGroup", FS_GROUP)
    spec["securityContext"] = security
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def statefulset_for(nb: Obj) -> Obj:
    meta = nb["metadata"]
    name = meta["name"]
    stopped = STOP_ANNOTATION in (meta.get("annotations") or {})
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "ownerReferences": [owner_reference(nb)],
        },
        "spec": {
            "replicas": 0 if stopped else 1,
            "serviceName": name,
            "selector": {"matchLabels": {"statefulset": name}},
            "template": pod_template(nb),
        },
    }


def service_for(nb: Obj) -> Obj:
    meta = nb["metadata"]
    name = meta["name"]
    ports = nb["spec"]["template"]["spec"]["containers"][0].get("ports") or []
    target = int(ports[0]["containerPort"]) if ports else CONTAINER_PORT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "ownerReferences": [owner_reference(nb)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"statefulset": name},
            "ports": [
                {
                    "name": f"http-{name}",
                    "port": SERVING_PORT,
                    "targetPort": target,
                    "protocol": "TCP",
                }
            ],
        },
    }


def status_for(sts: Obj | None, pod: Obj | None) -> Obj:
    """Notebook status: the CRD requires all three fields."""
    ready = int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)
    state: Obj = {}
    conditions: list[Obj] = []
    if pod is not None:
        first = pod["spec"]["containers"][0]["name"]
        pod_status = pod.get("status") or {}
        for cs in pod_status.get("containerStatuses") or []:
            if cs.get("name") == first:
                state = cs.get("state") or {}
        for c in pod_status.get("conditions") or []:
            conditions.append({k: v for k, v in c.items() if v is not None})
    return {"readyReplicas": ready, "containerState": state, "conditions": conditions}


def _is_owned_by(obj: Obj, nb: Obj) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == nb["metadata"]["uid"] for r in refs)


# --------------------------------------------------------------------------- controller


class _Queue:
    """Keys to reconcile, each at most once, the earliest due first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Key, float] = {}

    def add(self, key: Key, delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        with self._cond:
            if key not in self._due or due < self._due[key]:
                self._due[key] = due
                self._cond.notify()

    def get(self, stop: threading.Event) -> Key | None:
        with self._cond:
            while not stop.is_set():
                if self._due:
                    key, due = min(self._due.items(), key=lambda kv: kv[1])
                    wait = due - time.monotonic()
                    if wait <= 0:
                        del self._due[key]
                        return key
                    self._cond.wait(min(wait, 1.0))
                else:
                    self._cond.wait(1.0)
        return None


class NotebookStandIn:
    """Watches Notebooks, StatefulSets and notebook pods; one worker reconciles."""

    def __init__(self, api: Any, resync: float = 30.0) -> None:
        # Any: the client's own hints want model objects; this passes and reads plain JSON
        self.custom: Any = client.CustomObjectsApi(api)
        self.apps: Any = client.AppsV1Api(api)
        self.core: Any = client.CoreV1Api(api)
        self.resync = resync
        self.queue = _Queue()
        self.stop = threading.Event()
        self.synced: set[str] = set()
        self.failures: dict[Key, int] = {}

    def ready(self) -> bool:
        return self.synced >= {"notebooks", "statefulsets", "pods"}

    def start(self) -> None:
        watches: list[tuple[str, Callable[..., Any], Callable[[Obj], Iterable[Key]]]] = [
            (
                "notebooks",
                functools.partial(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL),
                lambda o: [(o["metadata"]["namespace"], o["metadata"]["name"])],
            ),
            (
                "statefulsets",
                self.apps.list_stateful_set_for_all_namespaces,
                lambda o: [
                    (o["metadata"]["namespace"], r["name"])
                    for r in o["metadata"].get("ownerReferences") or []
                    if r.get("kind") == "Notebook" and r.get("controller")
                ],
            ),
            (
                "pods",
                functools.partial(
                    self.core.list_pod_for_all_namespaces, label_selector="notebook-name"
                ),
                lambda o: [(o["metadata"]["namespace"], o["metadata"]["labels"]["notebook-name"])],
            ),
        ]
        for name, call, keys in watches:
            threading.Thread(
                target=self._watch, args=(name, call, keys), name=f"watch-{name}", daemon=True
            ).start()
        threading.Thread(target=self._work, name="worker", daemon=True).start()

    def _watch(
        self, what: str, call: Callable[..., Any], keys: Callable[[Obj], Iterable[Key]]
    ) -> None:
        """List, then watch until the watch times out (the resync) or fails; repeat."""
        backoff = 1.0
        while not self.stop.is_set():
            try:
                listed = json.loads(call(_preload_content=False, _request_timeout=TIMEOUT).data)
                for item in listed["items"]:
                    for key in keys(item):
                        self.queue.add(key)
                if what not in self.synced:
                    self.synced.add(what)
                    log("watch-synced", kind=what, items=len(listed["items"]))
                stream = Watch().stream(
                    call,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=int(self.resync),
                    _request_timeout=self.resync + TIMEOUT,
                    deserialize=False,
                )
                for event in stream:
                    for key in keys(event["object"]):
                        self.queue.add(key)
                    if self.stop.is_set():
                        return
                backoff = 1.0
            except Exception as e:
                log("watch-error", kind=what, error=describe(e), retry_in=backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _work(self) -> None:
        while (key := self.queue.get(self.stop)) is not None:
            try:
                self.reconcile(*key)
                self.failures.pop(key, None)
            except Exception as e:
                n = self.failures[key] = self.failures.get(key, 0) + 1
                delay = min(0.5 * 2**n, 30.0)
                log(
                    "reconcile-error",
                    namespace=key[0],
                    notebook=key[1],
                    error=describe(e),
                    retry_in=delay,
                )
                self.queue.add(key, delay)

    # ----------------------------------------------------------------- reconcile

    def _read(self, call: Callable[..., Any], *args: Any) -> Obj | None:
        try:
            return dict(
                json.loads(call(*args, _preload_content=False, _request_timeout=TIMEOUT).data)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def reconcile(self, ns: str, name: str) -> None:
        nb = self._read(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name)
        if nb is None or nb["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes what the Notebook owns
        sts = self._reconcile_statefulset(nb)
        self._reconcile_service(nb)
        if sts is not None:
            pod = self._read(self.core.read_namespaced_pod, f"{name}-0", ns)
            self._update_status(nb, sts, pod)

    def _reconcile_statefulset(self, nb: Obj) -> Obj | None:
        want = statefulset_for(nb)
        ns, name = want["metadata"]["namespace"], want["metadata"]["name"]
        for _ in range(5):
            have = self._read(self.apps.read_namespaced_stateful_set, name, ns)
            if have is None:
                created = self.apps.create_namespaced_stateful_set(
                    ns, want, _preload_content=False, _request_timeout=TIMEOUT
                )
                log("statefulset-created", namespace=ns, notebook=name, **_brief(want))
                return dict(json.loads(created.data))
            if not _is_owned_by(have, nb):
                log("statefulset-not-owned", namespace=ns, notebook=name)
                return None
            have["spec"]["replicas"] = want["spec"]["replicas"]
            have["spec"]["template"]["metadata"].update(want["spec"]["template"]["metadata"])
            have["spec"]["template"]["spec"] = want["spec"]["template"]["spec"]
            try:
                resp = self.apps.replace_namespaced_stateful_set(
                    name, ns, have, _preload_content=False, _request_timeout=TIMEOUT
                )
            except ApiException as e:
                if e.status == 409:
                    continue  # changed since read: read again
                raise
            updated = dict(json.loads(resp.data))
            if updated["metadata"]["resourceVersion"] != have["metadata"]["resourceVersion"]:
                log("statefulset-updated", namespace=ns, notebook=name, **_brief(want))
            return updated
        raise RuntimeError(f"StatefulSet {ns}/{name}: conflicts on 5 updates in a row")

    def _reconcile_service(self, nb: Obj) -> None:
        want = service_for(nb)
        ns, name = want["metadata"]["namespace"], want["metadata"]["name"]
        have = self._read(self.core.read_namespaced_service, name, ns)
        if have is None:
            self.core.create_namespaced_service(ns, want, _request_timeout=TIMEOUT)
            log("service-created", namespace=ns, notebook=name)
            return
        if not _is_owned_by(have, nb):
            log("service-not-owned", namespace=ns, notebook=name)
            return
        keys = ("name", "port", "targetPort", "protocol")
        ports = [{k: p.get(k) for k in keys} for p in have["spec"].get("ports") or []]
        if (
            ports != want["spec"]["ports"]
            or have["spec"].get("selector") != want["spec"]["selector"]
        ):
            have["spec"]["ports"] = want["spec"]["ports"]
            have["spec"]["selector"] = want["spec"]["selector"]
            self.core.replace_namespaced_service(name, ns, have, _request_timeout=TIMEOUT)
            log("service-updated", namespace=ns, notebook=name)

    def _update_status(self, nb: Obj, sts: Obj, pod: Obj | None) -> None:
        status = status_for(sts, pod)
        if nb.get("status") == status:
            return
        meta = nb["metadata"]
        body = {**nb, "status": status}
        try:
            self.custom.replace_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                body,
                _request_timeout=TIMEOUT,
            )
        except ApiException as e:
            if e.status != 409:
                raise
            self.queue.add((meta["namespace"], meta["name"]), 0.2)  # changed: next round
            return
        state = next(iter(status["containerState"]), "none")
        log(
            "status-updated",
            namespace=meta["namespace"],
            notebook=meta["name"],
            readyReplicas=status["readyReplicas"],
            containerState=state,
        )


def _brief(sts: Obj) -> Obj:
    c0 = sts["spec"]["template"]["spec"]["containers"][0]
    return {
        "replicas": sts["spec"]["replicas"],
        "image": c0.get("image"),
        "limits": (c0.get("resources") or {}).get("limits") or {},
    }


# --------------------------------------------------------------------------- process


def _serve_probes(addr: str, standin: NotebookStandIn) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/healthz" or (self.path == "/readyz" and standin.ready())
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok\n" if ok else b"not ready\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    host, _, port = addr.rpartition(":")
    server = http.server.ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gpushift_testing.notebook_standin", description=BANNER
    )
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--probe-addr", default="", help="host:port for /healthz and /readyz")
    ap.add_argument("--resync", type=float, default=30.0, help="seconds between full re-lists")
    args = ap.parse_args(argv)
    log("start", note=BANNER, kubeconfig=args.kubeconfig)
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    standin = NotebookStandIn(api, resync=args.resync)
    signal.signal(signal.SIGTERM, lambda *_: standin.stop.set())
    signal.signal(signal.SIGINT, lambda *_: standin.stop.set())
    if args.probe_addr:
        _serve_probes(args.probe_addr, standin)
    standin.start()
    standin.stop.wait()
    log("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
