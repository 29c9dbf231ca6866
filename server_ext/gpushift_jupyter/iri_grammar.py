"""jsonschema's IRI grammar, built when an IRI is first checked instead of at import.

jsonschema's format checkers import the optional `rfc3987_syntax` as jsonschema is
imported (jupyter_server's own dependencies install it), and that module builds a Lark
grammar as it is imported: about 1.1 s on a 2-core machine, paid by every process that
imports jsonschema — JupyterLab's server (jupyter_server → jupyter_events → jsonschema)
at every pod start, and a kernel importing kishu (kishu → nbformat → jsonschema).

`defer()` puts a stand-in in the module's place: jsonschema's
`from rfc3987_syntax import is_valid_syntax` gets a function that imports the real
module at its first call, so IRI format checks behave as before, only later; any other
name of the stand-in is the real module's. The stand-in leaves `sys.modules` at its
first use, or when `release()` is called, so a later `import rfc3987_syntax` gets the
real module. Nothing is deferred when the real module is already imported or is not
installed.

Plain Python with no import of gpushift: the server's start hook imports it
(`server_start`), and the kishu driver sends it to kernels as `_gpushift_iri_grammar`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

DEFERRED = "rfc3987_syntax"


def defer() -> bool:
    """Put the stand-in in place; whether it was (see the module's docstring)."""
    if DEFERRED in sys.modules or importlib.util.find_spec(DEFERRED) is None:
        return False
    sys.modules[DEFERRED] = _stand_in()
    return True


def release() -> None:
    """Take the stand-in out of `sys.modules` (when it is still there)."""
    if getattr(sys.modules.get(DEFERRED), "__gpushift_stand_in__", False):
        del sys.modules[DEFERRED]


def _real() -> Any:
    release()
    return importlib.import_module(DEFERRED)


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
