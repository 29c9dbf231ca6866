"""The local pod runner: plays the kubelet's part for Notebook pods on kwok nodes.

A TEST HARNESS for the local control plane (tests and ``hack/demo.py``); the product runs
on real Kubernetes, and nothing here ships. kwok plays the nodes and owns pod status (it
marks pods Running and Ready); this runner only runs the processes, for pods that

- carry Kubeflow's ``notebook-name`` label, or the label
  ``kwok_stages.RUN_LOCALLY_LABEL=true`` (pods that run to completion: the chart's hook
  Job and ``helm test`` pods, labelled through its ``hookPodLabels`` value), and are in
  `namespaces`, when given,
- are bound (``spec.nodeName``) to a node kwok plays (annotation ``kwok.x-k8s.io/node``),
- are not being deleted.

For each it starts the native sidecars (init containers with ``restartPolicy: Always``,
``gpushift-sidecar serve``), each after the previous passed its startup probe, then the
notebook container -- as local processes from the project's environment (see
pod_spec.py, pod_env.py): the pod's env with the downward API filled in, its PVCs as
local folders kept across pod recreation (the PV's hostPath when it has one, else
``<state>/volumes/<ns>/<claim>``), emptyDirs fresh per pod, a bound token of the pod's
ServiceAccount as ``KUBECONFIG`` (what in-cluster config is in a pod), and free local
ports. A pod on a kwok GPU node gets ``GPUSHIFT_FAKE_GPU=<node>`` (test-only, see
pod_spec.FAKE_GPU_ENV). A pod deleted or replaced (new uid) has its processes stopped
before the new ones start. Logs: ``<state>/pods/<ns>/<pod>-<uid8>/logs/<container>.log``.
While an exec startup probe runs the runner looks every 10 ms instead of 100 ms, so the
next container starts when the probe returns, as the kubelet starts it (a move's bench
counted up to 0.1 s of this runner's own polling otherwise).

Status is left to kwok: the pod is Ready before JupyterLab answers, so wait on the
notebook's URL through the proxy (notebook_proxy.py), whose route this runner sets. The
exception: a pod that runs to completion (restartPolicy Never/OnFailure) with the
RUN_LOCALLY_LABEL is started once kwok has marked it Running (kwok's pod-complete stage
leaves it alone, see kwok_stages.py), and when its containers have exited the runner
sets its phase -- Succeeded or Failed, from the exit codes -- and terminated
containerStatuses (pod_completion.py), as a kubelet would.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from gpushift_testing.common import KWOK_NODE_ANNOTATION, free_port
from gpushift_testing.kwok_stages import RUN_LOCALLY_LABEL
from gpushift_testing.notebook_proxy import Routes
from gpushift_testing.pki import write_kubeconfig
from gpushift_testing.pod_completion import completed_status
from gpushift_testing.pod_processes import LocalPod
from gpushift_testing.pod_spec import Layout, NodeFacts, plan_pod

log = logging.getLogger("gpushift.pod_runner")
NOTEBOOK_LABEL = "notebook-name"
# The pods this runner runs: notebooks' pods, and the pods kwok leaves it to complete.
SELECTORS = (NOTEBOOK_LABEL, f"{RUN_LOCALLY_LABEL}=true")
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi")
TOKEN_SECONDS = 24 * 3600  # the kubelet refreshes projected tokens; this runner does not
RETRY_S = 1.0
TICK_S = 0.1
"""How often the runner looks at its pods when no pod event comes."""
PROBE_TICK_S = 0.01
"""... while an exec startup probe runs: the kubelet learns an exec probe's result when
the command returns, and starts the pod's next container then."""


class PodRunner:
    """Runs the processes of Notebook pods on kwok nodes; `start()`, `stop()`."""

    def __init__(self, kubeconfig: Path, state_dir: Path, *,
                 namespaces: Iterable[str] | None = None, routes: Routes | None = None,
                 extra_env: dict[str, str] | None = None, venv_bin: Path | None = None,
                 grace: float = 10.0, probe_period: float | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.namespaces = set(namespaces) if namespaces is not None else None
        self.routes = routes or Routes()
        self.extra_env = dict(extra_env or {})
        self.venv_bin = venv_bin or Path(sys.executable).parent
        self.grace, self.probe_period = grace, probe_period
        self._api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        # Any: the API objects are read with their optional fields unchecked on purpose
        # (a test harness: a missing field should fail loudly, not be handled).
        self._core: Any = client.CoreV1Api(self._api)
        self._events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pods: dict[str, LocalPod] = {}  # uid -> the pod's processes
        self.stopped_pods: list[LocalPod] = []
        """The pods this runner stopped, in order (their `stop_times`: the bench's)."""
        self._retry_at: dict[str, float] = {}
        self._reported: set[str] = set()  # uids whose end this runner has reported
        self._nodes: dict[str, NodeFacts] = {}
        self._threads = [threading.Thread(target=self._reconcile_loop, name="pod-runner",
                                          daemon=True),
                         *(threading.Thread(target=self._watch_loop, args=(selector,),
                                            name=f"pod-runner-watch-{i}", daemon=True)
                           for i, selector in enumerate(SELECTORS))]

    # ------------------------------------------------------------------ public

    def start(self) -> PodRunner:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop every pod's processes (grace period, then SIGKILL) and the threads."""
        self._stop.set()
        self._threads[0].join(self.grace * 4 + 30)
        for watcher in self._threads[1:]:
            watcher.join(2)
        self._api.close()

    def local_pod(self, namespace: str, name: str) -> LocalPod | None:
        """The processes of pod `namespace/name` as run now (None when none)."""
        with self._lock:
            return next((p for p in self._pods.values() if p.key == (namespace, name)), None)

    def local_pods(self) -> list[LocalPod]:
        with self._lock:
            return list(self._pods.values())

    def signal_container(self, namespace: str, pod: str, container: str,
                         sig: int = signal.SIGKILL) -> int:
        """Send `sig` to a container's main process (fault tests); returns its pid. The
        runner restarts the container as the kubelet would (restartPolicy Always)."""
        local = self.local_pod(namespace, pod)
        pid = local.container(container).pid if local else None
        if local is None or pid is None:
            raise LookupError(f"no running container {container} in pod {namespace}/{pod}")
        os.kill(pid, sig)
        return pid

    # ------------------------------------------------------------------ watch

    def _watch_loop(self, selector: str) -> None:
        while not self._stop.is_set():
            try:
                raw = self._core.list_pod_for_all_namespaces(label_selector=selector,
                                                             _preload_content=False)
                listed = json.loads(raw.data)
                self._events.put((selector, "SYNC", listed["items"]))
                version = listed["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                        self._core.list_pod_for_all_namespaces, label_selector=selector,
                        resource_version=version, timeout_seconds=5,
                        allow_watch_bookmarks=True)
                    for event in stream:
                        obj = event["raw_object"]
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch error: {obj}")
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self._events.put((selector, event["type"], obj))
                        if self._stop.is_set():
                            return
            except Exception as e:  # 410 Gone, a restart of the API server: list again
                if not self._stop.is_set():
                    log.info("pod watch restarts after %s: %s", type(e).__name__, e)
                    time.sleep(RETRY_S)

    # ------------------------------------------------------------------ reconcile

    def _reconcile_loop(self) -> None:
        # The pods each watch (selector) knows, by uid.
        known: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SELECTORS}
        try:
            while not self._stop.is_set():
                with self._lock:
                    tick = PROBE_TICK_S if any(p.probing for p in self._pods.values()) else TICK_S
                try:
                    item: tuple[str, str, Any] | None = self._events.get(timeout=tick)
                except queue.Empty:
                    item = None
                while item is not None:
                    selector, kind, obj = item
                    if kind == "SYNC":
                        known[selector] = {p["metadata"]["uid"]: p for p in obj}
                    elif kind == "DELETED":
                        known[selector].pop(obj["metadata"]["uid"], None)
                    else:
                        known[selector][obj["metadata"]["uid"]] = obj
                    item = None if self._events.empty() else self._events.get_nowait()
                try:
                    self._reconcile({uid: pod for pods in known.values()
                                     for uid, pod in pods.items()})
                except Exception:  # one bad pod must not stop the runner
                    log.exception("reconcile failed; trying again")
                    time.sleep(RETRY_S)
        finally:
            for uid in list(self._pods):
                self._stop_pod(uid)

    def _reconcile(self, known: dict[str, dict[str, Any]]) -> None:
        wanted = {uid: pod for uid, pod in known.items() if self._wanted(pod)}
        for uid in [u for u in self._pods if u not in wanted]:
            self._stop_pod(uid)
        now = time.monotonic()
        for uid, pod in wanted.items():
            if uid not in self._pods and now >= self._retry_at.get(uid, 0.0):
                self._start_pod(pod)
        for uid, local in list(self._pods.items()):
            local.tick()
            exits = local.finished()
            if exits is not None and uid not in self._reported:
                self._report_end(wanted[uid], local, exits)
            port = local.plan.jupyter_port
            if port and local.main_started and local.plan.notebook:
                route = self.routes.get(local.plan.namespace, local.plan.notebook)
                if route is None or route.pod_uid != local.plan.uid:
                    self.routes.set(local.plan.namespace, local.plan.notebook, port,
                                    local.plan.uid)

    def _wanted(self, pod: dict[str, Any]) -> bool:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if self.namespaces is not None and meta["namespace"] not in self.namespaces:
            return False
        if meta.get("deletionTimestamp") or not spec.get("nodeName"):
            return False
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return False
        if spec.get("restartPolicy") in ("Never", "OnFailure") and phase != "Running":
            return False  # kwok's pod-ready first: its status must not follow our end
        node = self._node(spec["nodeName"])
        return node is not None and node.kwok

    def _node(self, name: str) -> NodeFacts | None:
        if name not in self._nodes:
            try:
                node = self._core.read_node(name)
            except client.ApiException as e:
                log.warning("node %s: %s", name, e.reason)
                return None
            key, value = KWOK_NODE_ANNOTATION
            capacity = node.status.capacity or {}
            self._nodes[name] = NodeFacts(
                name, (node.metadata.annotations or {}).get(key) == value,
                any(int(str(capacity.get(r, "0"))) > 0 for r in GPU_RESOURCES))
        return self._nodes[name]

    def _start_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        pod_dir = self.state_dir / "pods" / ns / f"{name}-{uid[:8]}"
        try:
            node = self._node(pod["spec"]["nodeName"])
            assert node is not None
            volumes = self._volumes(pod, pod_dir)
            kubeconfig = self._credentials(pod, pod_dir, volumes)
            layout = Layout(pod_dir, volumes, self.venv_bin, kubeconfig, self.extra_env)
            plan = plan_pod(pod, node, layout, free_port)
        except Exception as e:
            log.warning("pod %s/%s cannot start yet: %s: %s", ns, name, type(e).__name__, e)
            self._retry_at[uid] = time.monotonic() + RETRY_S
            return
        for other in [u for u, p in self._pods.items() if p.key == (ns, name)]:
            self._stop_pod(other)  # an older pod of that name first (the same PVC folder)
        local = LocalPod(plan, pod_dir / "logs", self.probe_period)
        log.info("pod %s/%s (uid %s) on %s%s: starting %s", ns, name, uid, node.name,
                 " (fake GPU)" if node.gpu else "", [c.name for c in plan.containers])
        with self._lock:
            self._pods[uid] = local
        self._retry_at.pop(uid, None)

    def _report_end(self, pod: dict[str, Any], local: LocalPod, exits: dict[str, int]) -> None:
        """Set the phase and containerStatuses of a pod that ran to completion."""
        meta = pod["metadata"]
        procs = [local.container(name) for name in exits]
        status = completed_status(pod, exits, {p.plan.name: p.started_wall for p in procs},
                                  {p.plan.name: p.exited_wall or time.time() for p in procs})
        self._core.patch_namespaced_pod_status(meta["name"], meta["namespace"],
                                               {"status": status})
        self._reported.add(meta["uid"])
        log.info("pod %s/%s (uid %s) ended %s: exit codes %s", meta["namespace"],
                 meta["name"], meta["uid"], status["phase"], exits)

    def _stop_pod(self, uid: str) -> None:
        with self._lock:
            local = self._pods.pop(uid)
        plan = local.plan
        self.routes.clear(plan.namespace, plan.notebook, uid)
        t0 = time.monotonic()
        local.stop(self.grace)
        self.stopped_pods.append(local)
        log.info("pod %s/%s (uid %s) stopped in %.2fs", plan.namespace, plan.name, uid,
                 time.monotonic() - t0)

    # ------------------------------------------------------------------ volumes

    def _volumes(self, pod: dict[str, Any], pod_dir: Path) -> dict[str, Path]:
        """volume name -> local folder: PVCs kept across pods, everything else per pod."""
        ns = pod["metadata"]["namespace"]
        folders: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            folder = (self._claim_folder(ns, claim) if claim
                      else pod_dir / "volumes" / volume["name"])
            folder.mkdir(parents=True, exist_ok=True)
            folders[volume["name"]] = folder
        return folders

    def _claim_folder(self, namespace: str, claim: str) -> Path:
        pvc = self._core.read_namespaced_persistent_volume_claim(claim, namespace)
        if pvc.spec.volume_name:
            pv = self._core.read_persistent_volume(pvc.spec.volume_name)
            if pv.spec.host_path is not None:
                return Path(pv.spec.host_path.path)
        return self.state_dir / "volumes" / namespace / claim

    def _credentials(self, pod: dict[str, Any], pod_dir: Path,
                     volumes: dict[str, Path]) -> Path | None:
        """A kubeconfig with a token of the pod's ServiceAccount bound to the pod (what the
        kubelet projects), also written into the pod's projected token volumes."""
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        account = spec.get("serviceAccountName") or "default"
        body = {"spec": {"expirationSeconds": TOKEN_SECONDS, "boundObjectRef": {
            "kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}}}
        token = self._core.create_namespaced_service_account_token(
            account, meta["namespace"], body).status.token
        ca_file = Path(self._api.configuration.ssl_ca_cert)
        for volume in spec.get("volumes") or []:
            sources = (volume.get("projected") or {}).get("sources") or []
            if any("serviceAccountToken" in s for s in sources):
                folder = volumes[volume["name"]]
                (folder / "token").write_text(token)
                shutil.copyfile(ca_file, folder / "ca.crt")
                (folder / "namespace").write_text(meta["namespace"])
        return write_kubeconfig(pod_dir / "kubeconfig", self._api.configuration.host, ca_file,
                                token, account)
