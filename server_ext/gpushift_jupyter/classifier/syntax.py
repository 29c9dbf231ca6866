"""Small questions about syntax trees that the walker asks: which fields hold expressions,
whether a block stops the cell, whether a `try` is a probe, what command a call runs."""

from __future__ import annotations

import ast

from gpushift_jupyter.classifier.devices import dotted, qualname
from gpushift_jupyter.classifier.state import KernelState

_EXITS = frozenset({"sys.exit", "exit", "quit", "SystemExit"})
LEAVES = frozenset({ast.Constant, ast.Name, ast.Load, ast.Store, ast.Del, str, int})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def child_fields(kind: type) -> tuple[str, ...]:
    """The fields of a node type that can hold expressions (not `ctx`, names or flags)."""
    fields = _CHILD_FIELDS.get(kind)
    if fields is None:
        skipped = {"ctx", "type_comment", "id", "attr", "arg", "conversion", "is_async", "op"}
        fields = tuple(
            field for field in getattr(kind, "_fields", ()) if field not in skipped
        )
        _CHILD_FIELDS[kind] = fields
    return fields


def is_get_ipython(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "get_ipython"
    )


def command_text(node: ast.AST) -> str:
    """`"nvidia-smi -L"` or `["nvidia-smi", "-L"]` as one command line."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        words = [elt.value for elt in node.elts
                 if isinstance(elt, ast.Constant) and isinstance(elt.value, str)]
        return " ".join(words)
    return ""


_PROBE_ERRORS = frozenset({
    "Exception", "BaseException", "RuntimeError", "ImportError", "ModuleNotFoundError",
    "OSError", "AssertionError",
})
_PROBE_MAX_STATEMENTS = 4


def is_probe(node: ast.Try | ast.TryStar) -> bool:
    """`try: pynvml.nvmlInit() except Exception: HAVE_NVML = False`: a short attempt with a
    fallback that swallows the failure probes for a GPU, it does not need one. A long body
    or a loop is real work wrapped in error handling, and a handler that re-raises does not
    fall back."""
    if len(node.body) > _PROBE_MAX_STATEMENTS:
        return False
    for statement in node.body:
        if isinstance(statement, ast.For | ast.While | ast.AsyncFor | ast.With):
            return False
    for handler in node.handlers:
        caught = handler.type
        names = (
            [dotted(elt) for elt in caught.elts] if isinstance(caught, ast.Tuple)
            else [dotted(caught)] if caught is not None else ["Exception"]
        )
        reraises = any(isinstance(inner, ast.Raise) for inner in ast.walk(handler))
        if not reraises and any(name in _PROBE_ERRORS for name in names):
            return True
    return False


def raises(statements: list[ast.stmt], state: KernelState) -> bool:
    """Whether a block stops the cell (`raise`, `sys.exit()`)."""
    for statement in statements:
        if isinstance(statement, ast.Raise):
            return True
        call = statement.value if isinstance(statement, ast.Expr) else None
        if isinstance(call, ast.Call) and (qualname(call.func, state) or "") in _EXITS:
            return True
    return False
