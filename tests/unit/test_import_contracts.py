"""The import rules between components, as contracts (`[tool.importlinter]` in
pyproject.toml) checked by import-linter over the real import graph: the notebook side
imports nothing of the cluster side; the webhook and the sidecar never import each
other, only the core; no product package imports the test harness; the cluster side
does not import the official Kubernetes client; pure decision modules reach no I/O
module, directly or through another module.

The second test proves the check bites: it copies the packages, adds one forbidden
import per contract and expects each contract to be reported broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = {
    "gpushift_core": ROOT / "core",
    "gpushift_webhook": ROOT / "webhook",
    "gpushift_sidecar": ROOT / "sidecar",
    "gpushift_certs": ROOT / "certs",
    "gpushift_jupyter": ROOT / "server_ext",
    "gpushift_testing": ROOT / "testing",
}
CONTRACTS = 7


def lint_imports(cwd: Path, path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_contracts_hold():
    result = lint_imports(ROOT, [ROOT / "testing"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {CONTRACTS} kept, 0 broken." in result.stdout


# (module file in the copy, the import added, the contract it breaks, the chain reported)
VIOLATIONS = [
    ("gpushift_jupyter/handlers.py", "import gpushift_core.labels",
     "The notebook side imports nothing of the cluster side",
     "gpushift_jupyter.handlers -> gpushift_core.labels"),
    ("gpushift_sidecar/env.py", "from gpushift_webhook import config",
     "The webhook and the sidecar never import each other",
     "gpushift_sidecar.env -> gpushift_webhook.config"),
    ("gpushift_sidecar/tracker.py", "from gpushift_certs import issue",
     "The sidecar needs no certificates",
     "gpushift_sidecar.tracker -> gpushift_certs.issue"),
    ("gpushift_core/labels.py", "from gpushift_sidecar import token",
     "The core builds on no component",
     "gpushift_core.labels -> gpushift_sidecar.token"),
    ("gpushift_certs/issue.py", "import gpushift_testing.pki",
     "No product package imports the test harness",
     "gpushift_certs.issue -> gpushift_testing.pki"),
    ("gpushift_webhook/cert_objects.py", "from kubernetes import client",
     "The cluster side does not import the official Kubernetes client",
     "gpushift_webhook.cert_objects -> kubernetes"),
    ("gpushift_sidecar/migration_steps.py", "import sqlite3",
     "Pure decisions reach no I/O module",
     "gpushift_sidecar.migration_steps -> sqlite3"),
]


def test_each_contract_reports_a_forbidden_import(tmp_path):
    for package, folder in PACKAGES.items():
        shutil.copytree(folder / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "labextension", "*.js"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, line, _contract, _chain in VIOLATIONS:
        with (tmp_path / module).open("a", encoding="utf-8") as f:
            f.write(f"\n{line}  # noqa\n")

    result = lint_imports(tmp_path, [tmp_path])

    assert result.returncode != 0
    assert f"Contracts: 0 kept, {CONTRACTS} broken." in result.stdout, result.stdout
    for _module, _line, contract, chain in VIOLATIONS:
        assert f"{contract} BROKEN" in result.stdout
        assert chain in result.stdout, chain
