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

Then it is not run again where its answer is known: JupyterLab reads only yarn 1's
output (`{"type": "info"}` lines), and the yarn of every JupyterLab 4 is yarn 3 or later,
which writes one `{"key": ..., "type": <the setting's type>}` line per setting, so
JupyterLab's configuration is empty (the default registry) whatever the settings are.
That is a property of the yarn program, not of its settings: once an output of that
shape was seen, the program (node and yarn.js, by path, size and modification time) is
noted in `~/.cache/gpushift/yarn-config-unreadable.json` (`$XDG_CACHE_HOME`; a
Kubeflow notebook's home is its volume, so every later pod of the notebook reads it),
and later starts give JupyterLab an empty output instead of running Node.js: the same
empty configuration, without the 0.4-0.5 s of CPU the command took beside every pod's
start, a move's included (`bench/e2e_migration.py --cpu`). A yarn that fails is never
noted (JupyterLab logs its error as before).

Plain Python with no import of gpushift or JupyterLab (`server_start` calls it from the
server's start hook).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

MODULE = "jupyterlab.commands"
UNREADABLE_FILE = "yarn-config-unreadable.json"
"""In the user's cache folder's `gpushift`: the yarn programs whose output JupyterLab
cannot read (`{"programs": [program_key, ...]}`)."""
MAX_NOTED = 16
"""At most this many programs are noted (the newest): a home sees few JupyterLabs."""


class Prefetch:
    """The command started early, and its output once asked for; or, for a program
    known to write what JupyterLab cannot read (`unreadable`), no command and an empty
    output."""

    def __init__(self, command: list[str], cwd: str, key: str | None = None,
                 unreadable: bool = False) -> None:
        self.command, self.cwd, self.key = command, cwd, key
        self.process = None if unreadable else subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.used = False
        """Whether JupyterLab took the output (a mismatch runs its own command)."""

    def matches(self, args: Sequence[str], cwd: Any) -> bool:
        return (list(args) == self.command and isinstance(cwd, str)
                and os.path.abspath(cwd) == self.cwd)

    def output(self) -> bytes:
        """What `subprocess.check_output(command, stderr=PIPE, cwd=...)` would give, or
        what JupyterLab reads of it."""
        self.used = True
        if self.process is None:
            return b""
        stdout, stderr = self.process.communicate()
        if self.process.returncode:
            raise subprocess.CalledProcessError(self.process.returncode, self.command,
                                                output=stdout, stderr=stderr)
        if self.key is not None and not readable_by_jupyterlab(stdout):
            note_unreadable(self.key)
        return stdout

    def discard(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def readable_by_jupyterlab(output: bytes) -> bool:
    """Whether JupyterLab's `_yarn_config` could find settings in this output of
    `yarn config --json` (pure). It reads yarn 1's `{"type": "info"}` lines; an output
    of JSON objects each with a `type` other than "info" (yarn 2+) gives it nothing."""
    lines = output.splitlines()
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            return True  # not yarn 2+'s shape: JupyterLab decides, every time
        if not isinstance(item, dict) or item.get("type", "info") == "info":
            return True
    return not lines


def program_key(command: Sequence[str]) -> str | None:
    """The yarn program of `command` (node and yarn.js): each file's real path, size and
    modification time; None when one cannot be read."""
    parts = []
    for path in command[:2]:
        try:
            found = os.stat(path)
        except OSError:
            return None
        parts.append(f"{os.path.realpath(path)}:{found.st_size}:{found.st_mtime_ns}")
    return " ".join(parts)


def _noted_file(cache: str | None) -> str:
    cache = cache or os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "gpushift", UNREADABLE_FILE)


def noted_unreadable(cache: str | None = None) -> list[str]:
    """The programs noted as writing what JupyterLab cannot read (none when the file is
    missing or not this module's), in the user's cache folder or `cache`."""
    try:
        with open(_noted_file(cache), "rb") as file:
            programs = json.load(file).get("programs")
    except (OSError, ValueError, AttributeError):
        return []
    return [p for p in programs if isinstance(p, str)] if isinstance(programs, list) else []


def note_unreadable(key: str, cache: str | None = None) -> None:
    """Note `key`'s program, in the user's cache folder or `cache` (best effort: a home
    that cannot be written to runs the command at every start, as before)."""
    others = [p for p in noted_unreadable(cache) if p != key]
    programs = [*others[-(MAX_NOTED - 1):], key]
    path = _noted_file(cache)
    partial = f"{path}.{os.getpid()}"  # then renamed: a reader never sees half a file
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(partial, "w") as file:
            json.dump({"programs": programs}, file)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(partial)


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
    """Start the command (unless its program is noted as unreadable) and have
    `jupyterlab.commands` use its output; whether JupyterLab will be given it."""
    global prefetch  # noqa: PLW0603 - one per process
    if prefetch is not None or MODULE in sys.modules:
        return False
    found = yarn_command()
    if found is None:
        return False
    command, cwd = found
    key = program_key(command)
    prefetch = Prefetch(command, cwd, key, key is not None and key in noted_unreadable())
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
