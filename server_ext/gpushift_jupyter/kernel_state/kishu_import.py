"""Imports kishu in the kernel about 1.2 s faster (sent to the kernel as the module
`_gpushift_kishu_import`, after `_gpushift_iri_grammar` and before the modules that
import kishu; see `driver.install_code`).

kishu imports nbformat, which imports jsonschema, which imports the IRI grammar of
`rfc3987_syntax`: 1.16 s of kishu's 1.58 s import (`python -X importtime -c "from kishu
import jupyterint"`), paid by every kernel before its first checkpoint or restore. While
kishu is imported, the grammar's module is a stand-in that builds it at its first use
(`gpushift_jupyter.iri_grammar`); the stand-in leaves `sys.modules` as soon as kishu is
imported, so a user's own `import rfc3987_syntax` gets the real module."""

from __future__ import annotations

import importlib
import sys

iri_grammar = sys.modules["_gpushift_iri_grammar"]


def import_kishu() -> None:
    deferred = iri_grammar.defer()
    try:
        importlib.import_module("kishu.jupyterint")
    finally:
        if deferred:
            iri_grammar.release()


import_kishu()
