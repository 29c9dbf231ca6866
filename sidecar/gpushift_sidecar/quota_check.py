"""Would a move to GPU exceed one of the namespace's ResourceQuotas? (pure)

The sidecar asks before it touches the Notebook (`quota_gate` reads the quotas), so that a
Kubeflow profile's `resourceQuotaSpec` of `requests.nvidia.com/gpu: "0"` refuses the move
at once, with the quota's name and numbers, instead of a GPU pod the StatefulSet
controller cannot create.

What is checked: the keys `requests.<resource>`, `limits.<resource>` and a bare
`<resource>` of every quota that applies to the GPU pod, against `status.used` (0 when
the quota controller has not counted yet) plus what the move needs. The limit is
`spec.hard` (the admin's current word; `status.hard` follows it a moment later). What the
pod holds now of the same resource is freed by the move (the StatefulSet deletes the old
pod before it creates the new one), so it is not counted twice.

Which quotas apply: those without scopes, and those whose scopes are all ones a notebook
pod on a GPU profile matches (`NotTerminating`: it has no activeDeadlineSeconds;
`NotBestEffort`: it has limits). A quota with any other scope (`Terminating`,
`BestEffort`, `PriorityClass`, ...) is left to the apiserver: its admission refuses the
pod if it must, and the guard rolls the move back on that refusal (FailedCreate).
Everything else (memory, CPU, `count/pods`, LimitRanges, Pod Security) is left to the
apiserver the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["QuotaRefusal", "applies_to_gpu_pod", "check_quotas", "parse_quantity", "quota_left"]

# Scopes a notebook pod with a GPU limit always matches.
MATCHING_SCOPES = frozenset({"NotTerminating", "NotBestEffort"})
_BINARY = {s: Decimal(2) ** (10 * i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)}
_DECIMAL = {s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3),
                                             ("M", 6), ("G", 9), ("T", 12), ("P", 15),
                                             ("E", 18))}


@dataclass(frozen=True)
class QuotaRefusal:
    """The first quota key the move would exceed."""

    quota: str
    """The ResourceQuota's name."""
    key: str
    """The key of `spec.hard`, e.g. "requests.nvidia.com/gpu"."""
    used: Decimal
    hard: Decimal
    needs: int
    """What the move adds (the profile's count less what this pod frees of it)."""

    @property
    def message(self) -> str:
        return (f"ResourceQuota {self.quota}: {self.key} used {_text(self.used)} of "
                f"{_text(self.hard)}, the move needs {self.needs}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.quota, "key": self.key, "used": _text(self.used),
                "hard": _text(self.hard), "needs": self.needs}


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("1", "500m", "2Gi", "1e3") as a number; ValueError when it
    is not one."""
    text = str(value).strip()
    for suffixes in (_BINARY, _DECIMAL):
        for suffix in sorted(suffixes, key=len, reverse=True):
            if text.endswith(suffix):
                return _number(text[: -len(suffix)], value) * suffixes[suffix]
    return _number(text, value)


def applies_to_gpu_pod(quota: Mapping[str, Any]) -> bool:
    """Whether the quota's scopes certainly match a notebook pod on a GPU profile."""
    spec = quota.get("spec") or {}
    scopes = set(spec.get("scopes") or [])
    for term in (spec.get("scopeSelector") or {}).get("matchExpressions") or []:
        if (term or {}).get("operator", "Exists") != "Exists":
            return False  # In/NotIn on PriorityClass and the like: not ours to judge
        scopes.add(str((term or {}).get("scopeName") or ""))
    return scopes <= MATCHING_SCOPES


def check_quotas(quotas: Sequence[Mapping[str, Any]], resource: str, count: int, *,
                 held: int = 0) -> QuotaRefusal | None:
    """The first quota that `count` more of `resource` (less `held`, what the pod frees)
    would exceed; None when every applicable quota admits the move. Unreadable numbers in
    a quota are skipped: the apiserver judges those."""
    needs = count - held
    if needs <= 0:
        return None
    for name, key, limit, in_use in _bounds(quotas, resource):
        if in_use + needs > limit:
            return QuotaRefusal(name, key, in_use, limit, needs)
    return None


def quota_left(quotas: Sequence[Mapping[str, Any]], resource: str, *,
               held: int = 0) -> int | None:
    """How many of `resource` a move could still take under the namespace's quotas: the
    least `hard - used` over the keys `check_quotas` reads, plus `held` (what this pod
    frees by moving), never below 0; None when no applicable quota bounds the resource."""
    left: Decimal | None = None
    for _, _, limit, in_use in _bounds(quotas, resource):
        room = limit - in_use
        left = room if left is None else min(left, room)
    return None if left is None else max(0, int(left) + held)


def _bounds(quotas: Sequence[Mapping[str, Any]], resource: str
            ) -> Iterator[tuple[str, str, Decimal, Decimal]]:
    """(quota name, key, hard, used) of every key bounding `resource` in the quotas that
    apply to a GPU pod, by quota name; a quantity that does not parse is skipped (the
    apiserver judges it)."""
    keys = (f"requests.{resource}", f"limits.{resource}", resource)
    for quota in sorted(quotas, key=lambda q: str((q.get("metadata") or {}).get("name"))):
        if not applies_to_gpu_pod(quota):
            continue
        name = str((quota.get("metadata") or {}).get("name") or "")
        hard = (quota.get("spec") or {}).get("hard") or {}
        used = (quota.get("status") or {}).get("used") or {}
        for key in keys:
            if key not in hard:
                continue
            try:
                limit, in_use = parse_quantity(hard[key]), parse_quantity(used.get(key, "0"))
            except ValueError:
                continue
            yield name, key, limit, in_use


def _number(text: str, original: object) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{original!r} is not a Kubernetes quantity") from None
    if not number.is_finite():
        raise ValueError(f"{original!r} is not a Kubernetes quantity")
    return number


def _text(number: Decimal) -> str:
    return str(number.normalize()) if number != number.to_integral() else str(int(number))
