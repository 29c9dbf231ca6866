"""The walk over a cell's tree: statements in order (so bindings take effect where they
happen), guards (`if torch.cuda.is_available():`), magics, and the expression rules."""

from __future__ import annotations

import ast
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from gpushift_jupyter.classifier import bindings
from gpushift_jupyter.classifier.calls import attribute_hit, call_hits
from gpushift_jupyter.classifier.devices import (
    GuardKind,
    contains_availability,
    dotted,
    guard_kind,
    qualname,
)
from gpushift_jupyter.classifier.magics import ipython_call_hits
from gpushift_jupyter.classifier.rules import (
    DEFAULT_ALIASES,
    GPU_DECORATORS,
    GPU_LIBRARIES,
    SHELL_RUNNERS,
)
from gpushift_jupyter.classifier.shell import shell_hits
from gpushift_jupyter.classifier.state import KernelState
from gpushift_jupyter.classifier.syntax import (
    LEAVES,
    child_fields,
    command_text,
    is_get_ipython,
    is_probe,
    raises,
)

LineMap = Callable[[int], int]
_DECORATED = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})


class Walker:
    """Walks one parsed source (a cell, or the Python inside a magic) and records hits as
    (user's line, rule) in `hits`, shared with nested walkers."""

    def __init__(self, state: KernelState, hits: list[tuple[int, str]], line_of: LineMap,
                 depth: int = 0, trigger_lines: list[int] | None = None) -> None:
        self.state = state
        self.hits = hits
        self.line_of = line_of
        self.depth = depth
        # Sorted lines (of the parsed text) where a GPU-related word or a remembered name
        # occurs; a statement spanning none of them cannot need a GPU nor change the
        # kernel's memory, so it is skipped. None: walk everything.
        self.trigger_lines = trigger_lines

    def hit(self, node: ast.AST, rule: str, guarded: bool) -> None:
        """Record a need unless the code runs only where a GPU is already there."""
        if not guarded:
            self.hits.append((self.line_of(getattr(node, "lineno", 1)), rule))

    def hit_line(self, line: int, rule: str, guarded: bool) -> None:
        """Record a need on a user's line (used by magics, whose text has no nodes)."""
        if not guarded:
            self.hits.append((line, rule))

    # statements ---------------------------------------------------------------------------

    def body(self, statements: list[ast.stmt], guarded: bool, *,
             stop_at_hit: bool = False) -> int:
        """Walk statements in order; how many were walked. `stop_at_hit`: stop after the
        first statement that records a need (an unguarded one: the cell needs a GPU, and
        what the later statements hold cannot change that)."""
        lines = self.trigger_lines
        count = len(lines) if lines is not None else 0
        dispatch = _STATEMENTS
        hits = self.hits
        before = len(hits)
        for position, statement in enumerate(statements):
            if lines is not None:
                first = statement.lineno
                if type(statement) in _DECORATED and statement.decorator_list:  # type: ignore[attr-defined]
                    first = statement.decorator_list[0].lineno  # type: ignore[attr-defined]
                index = bisect_left(lines, first)
                if index == count or lines[index] > (statement.end_lineno or first):
                    continue
            # A dict of node type -> method: one lookup instead of a chain of isinstance
            # checks (a cell's walk visits thousands of statements).
            dispatch.get(type(statement), Walker._other)(self, statement, guarded)
            if stop_at_hit and len(hits) > before:
                return position + 1
        return len(statements)

    def statement(self, node: ast.stmt, guarded: bool) -> None:
        """One statement: bindings, guards, then the expressions it holds."""
        _STATEMENTS.get(type(node), Walker._other)(self, node, guarded)

    def _import(self, node: ast.Import | ast.ImportFrom, guarded: bool) -> None:
        for rule in bindings.bind_import(node, self.state):
            self.hit(node, rule, guarded)

    def _assign(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign, guarded: bool) -> None:
        value = node.value
        if value is not None:
            self.expression(value, guarded)
        targets = node.targets if type(node) is ast.Assign else [node.target]  # type: ignore[union-attr]
        binds = value is not None and type(node) is not ast.AugAssign
        for target in targets:
            if type(target) not in LEAVES:  # a plain name holds nothing to walk
                self.expression(target, guarded)
            if binds:
                assert value is not None
                binding_rule = bindings.bind(target, value, self.state, guarded)
                if binding_rule:
                    self.hit(node, binding_rule, guarded)

    def _for(self, node: ast.For | ast.AsyncFor, guarded: bool) -> None:
        self.expression(node.iter, guarded)
        inner = guarded or contains_availability(node.iter, self.state)
        bindings.bind(node.target, node.iter, self.state, inner, iterating=True)
        self.body(node.body, inner)
        self.body(node.orelse, guarded)

    def _try(self, node: ast.Try | ast.TryStar, guarded: bool) -> None:
        catches = bool(node.handlers)
        probe = is_probe(node)
        for statement in node.body:
            # `try: import cupy` with a fallback is a check, not a need.
            is_import = type(statement) in _IMPORTS
            self.statement(statement, guarded or probe or (catches and is_import))
        for handler in node.handlers:
            self.body(handler.body, guarded)
        self.body(node.orelse, guarded)
        self.body(node.finalbody, guarded)

    def _with(self, node: ast.With | ast.AsyncWith, guarded: bool) -> None:
        for item in node.items:
            self.expression(item.context_expr, guarded)
            if item.optional_vars is not None:
                bindings.bind(item.optional_vars, item.context_expr, self.state, guarded)
        self.body(node.body, guarded)

    def _assert(self, node: ast.Assert, guarded: bool) -> None:
        if contains_availability(node.test, self.state):
            self.hit(node, "require_gpu", guarded)
        else:
            self.expression(node.test, guarded)

    def _delete(self, node: ast.Delete, guarded: bool) -> None:
        for target in node.targets:
            name = dotted(target)
            if name:
                self.state.forget(name)

    def _match(self, node: ast.Match, guarded: bool) -> None:
        self.expression(node.subject, guarded)
        for case in node.cases:
            self.body(case.body, guarded)

    def _other(self, node: ast.stmt, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expression(child, guarded)

    def conditional(self, node: ast.If | ast.While, guarded: bool) -> None:
        """`if`/`while`: a GPU check guards both branches; `if not gpu: raise` needs one."""
        self.expression(node.test, guarded)
        kind = guard_kind(node.test, self.state)
        if kind is GuardKind.GUARD and (
            raises(node.body, self.state) or raises(node.orelse, self.state)
        ):
            self.hit(node, "require_gpu", guarded)
        inner = guarded or kind is GuardKind.GUARD
        self.body(node.body, inner)
        self.body(node.orelse, inner)

    def definition(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, guarded: bool
    ) -> None:
        """A def or class: its body counts (it is written to run); remember it as a GPU
        function when it needs one, so a later call needs one too."""
        before = len(self.hits)
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            rule = GPU_DECORATORS.get(qualname(target, self.state) or "")
            if rule:
                self.hit(decorator, rule, guarded)
            self.expression(decorator, guarded)
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                self.expression(base, guarded)
        else:
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    self.expression(default, guarded)
            for rule_node, rule in bindings.default_hits(node.args, self.state):
                self.hit(rule_node, rule, guarded)
        self.state.forget(node.name)
        self.body(node.body, guarded)
        if len(self.hits) > before:
            self.state.gpu_functions.add(node.name)
            self.state.changed()

    # expressions --------------------------------------------------------------------------

    def expression(self, root: ast.AST, guarded: bool) -> None:  # noqa: PLR0915
        """Walk an expression without recursion (deep expressions must not overflow).
        One function on purpose: it runs for every node a cell's walk visits, and a call
        per node type would cost more than the work done for most nodes."""
        stack: list[tuple[ast.AST, bool]] = [(root, guarded)]
        pop, push = stack.pop, stack.append
        state = self.state
        aliases, shadowed = state.aliases, state.shadowed  # (mutated in place, never rebound)
        fields_of = _FIELDS
        while stack:
            node, inner = pop()
            kind = type(node)
            if kind in LEAVES:
                continue
            if kind is ast.Attribute:
                base: ast.AST = node
                while type(base) is ast.Attribute:
                    base = base.value
                if type(base) is ast.Name:
                    # Only chains rooted in torch or a GPU library can hit: resolve the root
                    # before building the dotted name.
                    head: str = base.id
                    resolved = aliases.get(head)  # state.resolve(head), inlined (hot)
                    if resolved is None:
                        resolved = head if head in shadowed else DEFAULT_ALIASES.get(head, head)
                    root_module = resolved.partition(".")[0]
                    if root_module == "torch" or root_module in GPU_LIBRARIES:
                        # qualname(node), from the root resolved above.
                        name = resolved + (dotted(node) or head)[len(head):]
                        rule = attribute_hit(node, name)  # type: ignore[arg-type]
                        if rule:
                            self.hit(node, rule, inner)
                else:
                    push((base, inner))
                continue
            if kind is ast.Call:
                self.call(node, inner)  # type: ignore[arg-type]
                # The children as the generic loop below would push them (func, args, then
                # each keyword's value: a keyword node itself holds nothing to check).
                func = node.func  # type: ignore[attr-defined]
                if type(func) not in LEAVES:
                    push((func, inner))
                for item in node.args:  # type: ignore[attr-defined]
                    if type(item) not in LEAVES:
                        push((item, inner))
                for keyword in node.keywords:  # type: ignore[attr-defined]
                    value = keyword.value
                    if type(value) not in LEAVES:
                        push((value, inner))
                continue
            if kind is ast.IfExp:
                test = node.test  # type: ignore[attr-defined]
                test_kind = guard_kind(test, state)
                branch_guarded = inner or test_kind is GuardKind.GUARD
                push((test, inner))
                push((node.body, branch_guarded))  # type: ignore[attr-defined]
                push((node.orelse, branch_guarded))  # type: ignore[attr-defined]
                continue
            elif kind is ast.BoolOp:
                later = inner
                for operand in node.values:  # type: ignore[attr-defined]
                    push((operand, later))
                    later = later or guard_kind(operand, state) is GuardKind.GUARD
                continue
            elif kind is ast.NamedExpr:
                bindings.bind(node.target, node.value, state, inner)  # type: ignore[attr-defined]
            fields = fields_of.get(kind)
            if fields is None:
                fields = fields_of[kind] = child_fields(kind)
            for field in fields:
                child: object = getattr(node, field, None)
                if type(child) is list:
                    for item in child:
                        if type(item) not in LEAVES:
                            push((item, inner))
                elif isinstance(child, ast.AST) and type(child) not in LEAVES:
                    push((child, inner))

    def call(self, node: ast.Call, guarded: bool) -> None:
        """The call rules, plus shell commands and IPython's magics."""
        state = self.state
        func = node.func
        # The callee's resolved name, computed once for every rule that looks at it.
        name = qualname(func, state)
        for rule_node, rule in call_hits(node, state, name or ""):
            self.hit(rule_node, rule, guarded)
        if type(func) is ast.Attribute and type(func.value) is ast.Call \
                and is_get_ipython(func.value):
            ipython_call_hits(self, node, func.attr, guarded)
        elif node.args and name in SHELL_RUNNERS:
            command = command_text(node.args[0])
            if command:
                for _, rule in shell_hits(command):
                    self.hit(node, rule, guarded)


# Per node type, the fields that can hold expressions: syntax.child_fields' answers, read
# here without a function call per node.
_FIELDS: dict[type, tuple[str, ...]] = {}
_IMPORTS = frozenset({ast.Import, ast.ImportFrom})
# Statement type -> its method (`_other`: the expressions of any other statement).
_STATEMENTS: dict[type, Callable[[Walker, Any, bool], None]] = {
    ast.Import: Walker._import,
    ast.ImportFrom: Walker._import,
    ast.Assign: Walker._assign,
    ast.AnnAssign: Walker._assign,
    ast.AugAssign: Walker._assign,
    ast.If: Walker.conditional,
    ast.While: Walker.conditional,
    ast.For: Walker._for,
    ast.AsyncFor: Walker._for,
    ast.FunctionDef: Walker.definition,
    ast.AsyncFunctionDef: Walker.definition,
    ast.ClassDef: Walker.definition,
    ast.Try: Walker._try,
    ast.TryStar: Walker._try,
    ast.With: Walker._with,
    ast.AsyncWith: Walker._with,
    ast.Assert: Walker._assert,
    ast.Delete: Walker._delete,
    ast.Match: Walker._match,
}
