"""Imports kishu in the kernel about 1.4 s faster (sent to the kernel as the module
`_gpushift_kishu_import`, after `_gpushift_format_checkers` and before the modules that
import kishu; see `driver.install_expression`). A new pod's restore pays this import before a
single variable comes back, so it is on the path of every move.

- kishu imports nbformat, which imports jsonschema, which imports the IRI grammar of
  `rfc3987_syntax`: 1.16 s of kishu's 1.58 s import (`python -X importtime -c "from
  kishu import jupyterint"`). While kishu is imported, the grammar's module and
  jsonschema's other optional format checkers are stand-ins that import them at their
  first use (`gpushift_jupyter.format_checkers`).
- kishu imports `ipylab` (with ipywidgets, 0.07 s) and `requests` (0.07 s) at module
  level for what gpushift never calls: asking a browser which platform it runs on, and
  asking the Jupyter server for the notebook's path (both given to kishu directly, see
  `agent.attach`). While kishu is imported they are stand-ins too (`_LazyModule`): the
  first name read from one imports the real module, so kishu still works when it does
  use them.

Every stand-in leaves `sys.modules` as soon as kishu is imported, so a user's own
`import requests` gets the real module. Nothing is deferred that is imported already or
not installed."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import types
from typing import Any

format_checkers = sys.modules["_gpushift_format_checkers"]
LAZY = ("ipylab", "requests")
"""Modules kishu imports but gpushift's use of it never reaches (see above)."""
seconds = 0.0
"""How long this kernel's import of kishu took (0.0 before it)."""


class _LazyModule(types.ModuleType):
    """A module's stand-in: reading any of its names imports the real module (leaving
    `sys.modules` to it) and answers with the real module's. `__path__` and `__file__`
    too, so that importing one of its submodules imports the real package first."""

    __gpushift_stand_in__ = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name not in ("__path__", "__file__"):
            raise AttributeError(name)  # the import system probing (`__spec__`, ...)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _defer_lazy() -> list[str]:
    deferred = [name for name in LAZY
                if name not in sys.modules and importlib.util.find_spec(name) is not None]
    for name in deferred:
        sys.modules[name] = _LazyModule(name)
    return deferred


def _release(names: list[str]) -> None:
    for name in names:
        if isinstance(sys.modules.get(name), _LazyModule):
            del sys.modules[name]


def import_kishu() -> None:
    global seconds  # noqa: PLW0603 - the module is the kernel's memory
    started = time.monotonic()
    checkers = format_checkers.defer()
    lazy = _defer_lazy()
    try:
        importlib.import_module("kishu.jupyterint")
    finally:
        _release(lazy)
        if checkers:
            format_checkers.release()
    seconds = time.monotonic() - started


import_kishu()
