"""Imports kishu in the kernel about 1.2 s faster (sent to the kernel as the module
`_gpushift_kishu_import`, before the modules that import kishu; see `driver.install_code`).

kishu imports nbformat, which imports jsonschema, whose format checkers import the
optional `rfc3987_syntax` when it is installed (jupyter_server's own dependencies install
it). That module builds a Lark grammar as it is imported: 1.16 s of kishu's 1.58 s import
(`python -X importtime -c "from kishu import jupyterint"`), paid by every kernel before
its first checkpoint or restore. While kishu is imported here, a stand-in takes its
place: jsonschema's `from rfc3987_syntax import is_valid_syntax` gets a function that
imports the real module at its first call, so IRI format checks behave as before, only
later. The stand-in leaves `sys.modules` as soon as kishu is imported, so a user's own
`import rfc3987_syntax` gets the real module. Nothing is deferred when the real module is
already imported or is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

DEFERRED = "rfc3987_syntax"


def _real() -> Any:
    _release()
    return importlib.import_module(DEFERRED)


def _release() -> None:
    if getattr(sys.modules.get(DEFERRED), "__gpushift_stand_in__", False):
        del sys.modules[DEFERRED]


def _stand_in() -> types.ModuleType:
    module = types.ModuleType(DEFERRED)
    module.__gpushift_stand_in__ = True  # type: ignore[attr-defined]

    def is_valid_syntax(*args: Any, **kwargs: Any) -> Any:
        return _real().is_valid_syntax(*args, **kwargs)

    def module_getattr(name: str) -> Any:  # any other name: the real module's (PEP 562)
        if name.startswith("__"):  # the import system probing (`__path__`, `__spec__`)
            raise AttributeError(name)
        return getattr(_real(), name)

    module.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    module.__getattr__ = module_getattr  # type: ignore[method-assign]
    return module


def import_kishu() -> None:
    deferred = DEFERRED not in sys.modules and importlib.util.find_spec(DEFERRED) is not None
    if deferred:
        sys.modules[DEFERRED] = _stand_in()
    try:
        importlib.import_module("kishu.jupyterint")
    finally:
        if deferred:
            _release()


import_kishu()
