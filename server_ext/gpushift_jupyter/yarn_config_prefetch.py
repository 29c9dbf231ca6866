"""JupyterLab's `node yarn.js config --json`, started as the server process starts
instead of when `jupyterlab.labapp` is imported.

JupyterLab asks yarn for its npm registry while `jupyterlab.labapp` is imported
(`app_version = get_app_version()` at module level → `AppOptions.registry` →
`jupyterlab.commands._yarn_config`): a Node.js process that took 0.40 s of the server's
start here, and every pod start waits for it wherever Node.js is installed — Kubeflow's
jupyter images install it. `start` runs the very same command at once, beside the
server's second of imports. Once `jupyterlab.commands` is imported, its `_yarn_config`
gets that process's output when it runs exactly that command (same program, arguments
and folder) and runs the command itself otherwise; JupyterLab's own parsing and error
handling see the same bytes. Nothing changes but when the command ran.

Plain Python with no import of gpushift or JupyterLab (`server_start` calls it from the
server's start hook).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

MODULE = "jupyterlab.commands"


class Prefetch:
    """The command started early, and its output once asked for."""

    def __init__(self, command: list[str], cwd: str) -> None:
        self.command, self.cwd = command, cwd
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.used = False
        """Whether JupyterLab took the output (a mismatch runs its own command)."""

    def matches(self, args: Sequence[str], cwd: Any) -> bool:
        return (list(args) == self.command and isinstance(cwd, str)
                and os.path.abspath(cwd) == self.cwd)

    def output(self) -> bytes:
        """What `subprocess.check_output(command, stderr=PIPE, cwd=...)` would give."""
        self.used = True
        stdout, stderr = self.process.communicate()
        if self.process.returncode:
            raise subprocess.CalledProcessError(self.process.returncode, self.command,
                                                output=stdout, stderr=stderr)
        return stdout

    def discard(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


prefetch: Prefetch | None = None
"""The command started by `start` (None when nothing was started)."""


def yarn_command() -> tuple[list[str], str] | None:
    """JupyterLab's command and folder, found without importing JupyterLab: `node` (or
    `nodejs`) on PATH as `jupyterlab_server.process.which` finds it, yarn.js from
    jupyter_builder (JupyterLab 4.5+) or JupyterLab's staging folder. None when
    JupyterLab or Node.js is not installed."""
    lab = importlib.util.find_spec("jupyterlab")
    if lab is None or not lab.submodule_search_locations:
        return None
    here = os.path.abspath(next(iter(lab.submodule_search_locations)))
    path = os.environ.get("PATH") or os.defpath
    node = shutil.which("node", path=path) or shutil.which("nodejs", path=path)
    if node is None:
        return None
    candidates = []
    builder = importlib.util.find_spec("jupyter_builder")
    if builder is not None and builder.submodule_search_locations:
        folder = next(iter(builder.submodule_search_locations))
        candidates.append(os.path.realpath(os.path.join(folder, "yarn.js")))
    candidates.append(os.path.join(here, "staging", "yarn.js"))
    yarn = next((c for c in candidates if os.path.isfile(c)), None)
    if yarn is None:
        return None
    return [os.path.abspath(node), yarn, "config", "--json"], here


def start() -> bool:
    """Start the command and have `jupyterlab.commands` use its output; whether it
    started."""
    global prefetch  # noqa: PLW0603 - one per process
    if prefetch is not None or MODULE in sys.modules:
        return False
    found = yarn_command()
    if found is None:
        return False
    prefetch = Prefetch(*found)
    sys.meta_path.insert(0, _PatchOnImport())
    return True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds `jupyterlab.commands` as the path finder would, and patches the module
    right after it has run (once)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def patch(commands: Any) -> None:
    """`commands._yarn_config` gets the prefetched output for the prefetched command
    (`commands` is the module `jupyterlab.commands`)."""
    original = getattr(commands, "_yarn_config", None)
    real = getattr(commands, "subprocess", None)
    if original is None or real is not subprocess:
        _discard()
        return

    def _yarn_config(logger: Any) -> Any:
        commands.subprocess = _Subprocess()
        try:
            return original(logger)
        finally:
            commands.subprocess = subprocess
            _discard()  # a later call runs the command itself

    _yarn_config.__wrapped__ = original  # type: ignore[attr-defined]
    commands._yarn_config = _yarn_config


class _Subprocess:
    """`subprocess` for one call of `_yarn_config`: `check_output` of the prefetched
    command is its output; anything else is the real module's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def check_output(self, args: Sequence[str], **kwargs: Any) -> Any:
        if prefetch is not None and not prefetch.used and prefetch.matches(
                args, kwargs.get("cwd")):
            return prefetch.output()
        return subprocess.check_output(args, **kwargs)


def _discard() -> None:
    """The prefetched process, when JupyterLab did not take it, is not left running."""
    if prefetch is not None and not prefetch.used:
        prefetch.discard()
