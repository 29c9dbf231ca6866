"""Real kernels in tests: a Jupyter kernelspec of this interpreter in a test's own folder,
so that tests start kernels of the project's environment and never another python3
kernelspec found on the machine, and a user's cell run in one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


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


async def run_cell(client: Any, code: str, timeout: float) -> str:
    """Run `code` as a user's cell (recorded: kishu and the history see it) through a
    started `AsyncKernelClient`; its stdout. A cell that fails fails the test, with
    the kernel's error."""
    out: list[str] = []
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream" and content.get("name") == "stdout":
            out.append(content["text"])
        elif msg["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    reply = await client.execute_interactive(code, timeout=timeout, output_hook=hook)
    assert reply["content"]["status"] == "ok", (code, errors)
    return "".join(out)
