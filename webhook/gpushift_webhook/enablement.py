"""Which namespaces gpushift acts in: the same rule as the chart's
MutatingWebhookConfiguration `namespaceSelector`, for the parts of the webhook that the
API server's selector does not filter for it (the migration guard lists Notebooks of
every namespace). Pure: the guard reads the namespaces (`KubeApi.list_namespaces`) and
asks `namespace_enabled` about each.

- `opt-in` (the chart's default): only namespaces labelled `gpushift.io/enabled=true`.
- `cluster-wide`: every namespace not labelled `gpushift.io/enabled=false`.
- In both, never `kube-system`, the webhook's own namespace or `excluded_namespaces`
  (the chart's `gpushift.excludedNamespaces`; the CLI adds `--namespace` to the config's
  list).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

from gpushift_core.labels import ENABLED_LABEL

# Excluded whatever the config says, as in the chart's namespaceSelector.
ALWAYS_EXCLUDED = frozenset({"kube-system"})


class EnablementMode(StrEnum):
    OPT_IN = "opt-in"
    CLUSTER_WIDE = "cluster-wide"


def namespace_selector(mode: EnablementMode) -> str:
    """The label selector of the enabled namespaces, for a server-side filtered list
    (`namespace_enabled` still decides: it also knows the excluded names)."""
    if mode is EnablementMode.CLUSTER_WIDE:
        return f"{ENABLED_LABEL}!=false"
    return f"{ENABLED_LABEL}=true"


def namespace_enabled(name: str, labels: Mapping[str, str] | None, mode: EnablementMode,
                      excluded: Collection[str] = ()) -> bool:
    """Whether gpushift acts in namespace `name` with these labels."""
    if not name or name in ALWAYS_EXCLUDED or name in excluded:
        return False
    value = (labels or {}).get(ENABLED_LABEL)
    if mode is EnablementMode.CLUSTER_WIDE:
        return value != "false"
    return value == "true"
