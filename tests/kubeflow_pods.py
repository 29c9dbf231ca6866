"""Realistic Kubeflow notebook pods and AdmissionReviews, shaped as the notebook-controller's
StatefulSet produces them after the ServiceAccount admission plug-in ran."""

from __future__ import annotations

import copy
import uuid
from typing import Any

NAMESPACE = "kubeflow-user-example-com"


def notebook_pod(name: str = "my-notebook", *, gpu: int = 0, workspace: bool = True,
                 istio: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": "kubeflownotebookswg/jupyter-scipy:v1.9.2",
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "NB_PREFIX", "value": f"/notebook/{NAMESPACE}/{name}"}],
        "ports": [{"containerPort": 8888, "name": "notebook-port", "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "600m", "memory": "1288490188800m"},
                      "requests": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [
            {"mountPath": "/dev/shm", "name": "dshm"},
            {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
             "name": "kube-api-access-x7k2p", "readOnly": True},
        ],
        "workingDir": "/home/jovyan",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]}},
    ]
    if workspace:
        container["volumeMounts"].insert(0, {"mountPath": "/home/jovyan",
                                             "name": f"{name}-workspace"})
        volumes.insert(0, {"name": f"{name}-workspace",
                           "persistentVolumeClaim": {"claimName": f"{name}-workspace"}})
    if gpu:
        container["resources"]["limits"]["nvidia.com/gpu"] = str(gpu)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-0",
            "generateName": f"{name}-",
            "namespace": NAMESPACE,
            "labels": {"app": name, "notebook-name": name, "statefulset": name,
                       "controller-revision-hash": f"{name}-6d8f7c9b5",
                       "statefulset.kubernetes.io/pod-name": f"{name}-0"},
            "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                                 "uid": str(uuid.uuid4()), "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "containers": [container],
            "serviceAccountName": "default-editor",
            "securityContext": {"fsGroup": 100},
            "hostname": f"{name}-0",
            "subdomain": name,
            "restartPolicy": "Always",
            "volumes": volumes,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready",
                 "operator": "Exists", "tolerationSeconds": 300},
            ],
        },
        "status": {},
    }
    if istio:
        pod["spec"]["initContainers"] = [{"name": "istio-init", "image": "istio/proxyv2:1.22"}]
    return pod


def admission_review(pod: dict[str, Any], *, namespace: str = NAMESPACE,
                     operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kubeflow:notebook-controller"},
            "object": copy.deepcopy(pod),
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
