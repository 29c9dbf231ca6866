"""Env, paths and ports of a pod's container as local processes see them (pure).

Part of the local pod runner, a TEST HARNESS (see pod_runner.py). In a pod each container
has its own filesystem and the pod its own network namespace; here all processes share
one machine, so:

- mounted paths (``/home/jovyan``, ``/var/run/gpushift``) are rewritten to local folders
  wherever they appear, at path boundaries, in env values and arguments;
- the ports the pod listens on (container ports, ``--port N`` arguments) get free local
  ports, rewritten in ``--port``-style arguments, ``*PORT`` env values and loopback URLs;
- the downward API is filled in from the pod (``status.podIP`` is 127.0.0.1: the address
  the processes really listen on), and ``$(VAR)`` references are expanded as the
  kubelet expands them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

LOOPBACK = "127.0.0.1"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_PORT_OPTION = re.compile(r"^--(?:[A-Za-z]+\.)?port$")
_PORT_ASSIGN = re.compile(r"^(--(?:[A-Za-z]+\.)?port=)(\d+)$")


class EnvProblem(ValueError):
    """A variable the runner cannot fill in here; the message says which and why."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is a
    literal ``$``, unknown references stay as they are."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(one, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """A downward-API ``fieldRef.fieldPath`` of `pod` (an API object as JSON)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": LOOPBACK,
        "status.podIPs": LOOPBACK,
        "status.hostIP": LOOPBACK,
        "status.hostIPs": LOOPBACK,
    }
    if path in simple:
        return str(simple[path] or "")
    keyed = _FIELD_KEY.match(path)
    if keyed:
        return str((meta.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    raise EnvProblem(f"fieldRef {path!r} is not supported by the local pod runner")


def resource_value(pod: Mapping[str, Any], container: Mapping[str, Any],
                   ref: Mapping[str, Any]) -> str:
    """A ``resourceFieldRef``: the raw limit or request (no divisor arithmetic), or "0"."""
    target = container
    if ref.get("containerName"):
        target = next((c for c in (pod.get("spec") or {}).get("containers") or []
                       if c.get("name") == ref["containerName"]), container)
    section, _, resource = str(ref.get("resource", "")).partition(".")
    value = ((target.get("resources") or {}).get(section) or {}).get(resource)
    return str(value) if value is not None else "0"


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's own env list resolved in order (later entries may refer to earlier
    ones with ``$(VAR)``). configMap/secret references raise EnvProblem."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = str(item["name"])
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        source = item["valueFrom"] or {}
        if "fieldRef" in source:
            env[name] = field_value(pod, str(source["fieldRef"].get("fieldPath", "")))
        elif "resourceFieldRef" in source:
            env[name] = resource_value(pod, container, source["resourceFieldRef"])
        else:
            raise EnvProblem(f"env {name}: {sorted(source)} is not supported by the "
                             "local pod runner")
    if container.get("envFrom"):
        raise EnvProblem("envFrom is not supported by the local pod runner")
    return env


def path_rewriter(mounts: Mapping[str, str]) -> Callable[[str], str]:
    """A function replacing each mounted path (longest first) by its local folder where
    it appears as a whole path component run: ``/home/jovyan`` and ``/home/jovyan/x`` and
    ``--notebook-dir=/home/jovyan``, not ``/home/jovyanx`` or ``/x/home/jovyan``."""
    ordered = sorted(mounts, key=len, reverse=True)
    if not ordered:
        return lambda text: text
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(p.rstrip("/")) for p in ordered)
        + r")(?![\w.-])")
    local = {p.rstrip("/"): v for p, v in mounts.items()}
    return lambda text: pattern.sub(lambda m: local[m.group(1)], text)


def remap_port_text(text: str, ports: Mapping[int, int]) -> str:
    """Loopback URLs (``127.0.0.1:N``, ``localhost:N``) of the pod's ports, remapped."""
    for old, new in ports.items():
        text = re.sub(rf"(?<=(127\.0\.0\.1|localhost):){old}(?!\d)", str(new), text)
    return text


def remap_port_args(args: list[str], ports: Mapping[int, int]) -> list[str]:
    """``--port N``, ``--port=N``, ``--ServerApp.port=N`` and loopback URLs remapped."""
    out: list[str] = []
    for i, arg in enumerate(args):
        text = arg
        assigned = _PORT_ASSIGN.match(arg)
        if assigned and int(assigned.group(2)) in ports:
            text = assigned.group(1) + str(ports[int(assigned.group(2))])
        elif (i > 0 and _PORT_OPTION.match(args[i - 1]) and arg.isdigit()
              and int(arg) in ports):
            text = str(ports[int(arg)])
        out.append(remap_port_text(text, ports))
    return out


def remap_port_env(env: Mapping[str, str], ports: Mapping[int, int]) -> dict[str, str]:
    """``*PORT`` variables holding one of the pod's ports, and loopback URLs, remapped."""
    out = {}
    for name, value in env.items():
        text = value
        if name.upper().endswith("PORT") and value.isdigit() and int(value) in ports:
            text = str(ports[int(value)])
        out[name] = remap_port_text(text, ports)
    return out


def listening_ports(containers: list[Mapping[str, Any]]) -> list[int]:
    """The ports the pod's processes listen on: container ports and ``--port`` values."""
    found: list[int] = []
    for c in containers:
        found += [int(p["containerPort"]) for p in c.get("ports") or [] if "containerPort" in p]
        args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        for i, arg in enumerate(args):
            assigned = _PORT_ASSIGN.match(arg)
            if assigned:
                found.append(int(assigned.group(2)))
            elif i > 0 and _PORT_OPTION.match(args[i - 1]) and arg.isdigit():
                found.append(int(arg))
    return list(dict.fromkeys(found))
