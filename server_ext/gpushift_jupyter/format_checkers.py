"""jsonschema's optional format checkers, imported when a value is first checked instead
of when jsonschema is imported.

jsonschema imports every optional format-checking library it finds as it is imported
(`jsonschema._format`), and jupyter_server's own dependencies install them. The worst,
`rfc3987_syntax`, builds a Lark grammar for IRIs as it is imported: about 1.1 s on a
2-core machine. The others cost 15-40 ms together (`rfc3986_validator` compiles its URI
regexes). Every process that imports jsonschema pays this: JupyterLab's server
(jupyter_server → jupyter_events → jsonschema) at every pod start, and a kernel importing
kishu (kishu → nbformat → jsonschema).

`defer()` puts a stand-in in each module's place (`DEFERRED`): jsonschema's
`from rfc3987_syntax import is_valid_syntax` gets a function that imports the real module
at its first call, and its `import webcolors` a module whose names are read from the real
one at their first use, so format checks behave as before, only later. A module's stand-in
leaves `sys.modules` at its first use, or when `release()` is called, so a later
`import rfc3987_syntax` gets the real module. Nothing is deferred that is already
imported or not installed. Left alone: the libraries jsonschema reads an exception class
from as it is imported (`idna`, `jsonpointer`, `isoduration`), since a stand-in's class
would not be the one the real library raises.

Plain Python with no import of gpushift: the server's start hook imports it
(`server_start`), and the kishu driver sends it to kernels as `_gpushift_format_checkers`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from importlib.machinery import ModuleSpec
from typing import Any

DEFERRED: dict[str, tuple[str, ...]] = {
    "rfc3987_syntax": ("is_valid_syntax",),  # the IRI grammar
    "rfc3986_validator": ("validate_rfc3986",),
    "rfc3339_validator": ("validate_rfc3339",),
    "fqdn": ("FQDN",),
    "webcolors": (),
    "uri_template": (),
}
"""Module -> the names jsonschema imports from it with `from module import name` (a
stand-in must have them at once; any other name is read from the real module when first
used)."""

IRI_GRAMMAR = "rfc3987_syntax"
# A module's own names that another importer may read (`from webcolors import *`, a
# version check): the real module's. Any other dunder the stand-in lacks is not there
# (`__getattr__` is asked only for names the stand-in does not have).
_REAL_DUNDERS = frozenset({"__all__", "__version__"})


def defer() -> list[str]:
    """Put the stand-ins in place; the modules deferred (see the module's docstring)."""
    deferred = []
    for name in DEFERRED:
        spec = None if name in sys.modules else importlib.util.find_spec(name)
        if spec is not None:
            sys.modules[name] = _stand_in(name, spec)
            deferred.append(name)
    return deferred


def release() -> None:
    """Take the stand-ins still in `sys.modules` out of it."""
    for name in DEFERRED:
        if getattr(sys.modules.get(name), "__gpushift_stand_in__", False):
            del sys.modules[name]


def _real(name: str) -> Any:
    if getattr(sys.modules.get(name), "__gpushift_stand_in__", False):
        del sys.modules[name]
    return importlib.import_module(name)


def _stand_in(name: str, spec: ModuleSpec) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__gpushift_stand_in__ = True  # type: ignore[attr-defined]
    # The real module's spec, file and (for a package) path: `importlib.util.find_spec`
    # answers as before, and `import rfc3987_syntax.syntax_helpers` finds its submodule.
    module.__spec__, module.__loader__ = spec, spec.loader
    module.__file__ = spec.origin
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    for attribute in DEFERRED[name]:
        setattr(module, attribute, _first_use(name, attribute))

    def module_getattr(attribute: str) -> Any:  # any other name: the real module's (PEP 562)
        if attribute.startswith("__") and attribute not in _REAL_DUNDERS:
            raise AttributeError(attribute)
        return getattr(_real(name), attribute)

    module.__getattr__ = module_getattr  # type: ignore[method-assign]
    return module


def _first_use(name: str, attribute: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_real(name), attribute)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attribute
    return call
