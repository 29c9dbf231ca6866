"""gpushift's cluster-side core: what the webhook and the sidecar share, and nothing else.

- `admin_settings`: the admin's GPU profiles, image map and idle bounds (one schema);
  `settings_loader` builds such dataclasses from YAML/JSON with errors that name the field.
- `move_plan` / `rollback_record`: the Notebook patch of a move and the record that undoes it;
  `spec_editor`: the field edits and record-keeping both directions share.
- `pod_profile`: which GPU profile a pod runs on, from its spec.
- `patches`: the one JSON Patch builder.
- `kube`: the one Kubernetes client (Notebooks, pods, Events, Leases), its connection
  (ServiceAccount or kubeconfig, one urllib3 pool), its transport and its errors.
- `labels`, `jsonlog`, `version`.

The webhook (`gpushift_webhook`) and the sidecar (`gpushift_sidecar`) each build on this
package and never import each other; `tests/unit/test_import_contracts.py` checks it.
"""

from gpushift_core.version import __version__

__all__ = ["__version__"]
