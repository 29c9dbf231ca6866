"""A Jupyter kernelspec of this interpreter in a test's own folder, so that tests start
kernels of the project's environment and never another python3 kernelspec found on the
machine (kishu needs `kernel-<uuid>.json` connection files: jupyter_client's default)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def isolated_kernelspec(folder: Path, name: str, display_name: str) -> dict[str, str]:
    """Writes `<folder>/jupyter/kernels/<name>/kernel.json`; returns the environment
    variables that make Jupyter (and IPython, which kernelspec lookup imports) use the
    folder: set them (e.g. with monkeypatch) before starting kernels."""
    spec = folder / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name, "language": "python"}))
    return {"JUPYTER_PATH": str(folder / "jupyter"),
            "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
            "IPYTHONDIR": str(folder / "ipython")}
