"""The walk over a cell's tree: statements in order (so bindings take effect where they
happen), guards (`if torch.cuda.is_available():`), magics, and the expression rules."""

from __future__ import annotations

import ast
import bisect
from collections.abc import Callable

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
from gpushift_jupyter.classifier.rules import GPU_DECORATORS, GPU_LIBRARIES, SHELL_RUNNERS
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
_DECORATED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


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

    def body(self, statements: list[ast.stmt], guarded: bool) -> None:
        """Walk statements in order."""
        lines = self.trigger_lines
        for statement in statements:
            if lines is not None:
                first = statement.lineno
                if isinstance(statement, _DECORATED) and statement.decorator_list:
                    first = statement.decorator_list[0].lineno
                index = bisect.bisect_left(lines, first)
                if index == len(lines) or lines[index] > (statement.end_lineno or first):
                    continue
            self.statement(statement, guarded)

    def statement(self, node: ast.stmt, guarded: bool) -> None:  # noqa: PLR0915
        """One statement: bindings, guards, then the expressions it holds."""
        if isinstance(node, ast.Import | ast.ImportFrom):
            for rule in bindings.bind_import(node, self.state):
                self.hit(node, rule, guarded)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            value = node.value
            if value is not None:
                self.expression(value, guarded)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                self.expression(target, guarded)
                if value is not None and not isinstance(node, ast.AugAssign):
                    binding_rule = bindings.bind(target, value, self.state, guarded)
                    if binding_rule:
                        self.hit(node, binding_rule, guarded)
        elif isinstance(node, ast.If | ast.While):
            self.conditional(node, guarded)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expression(node.iter, guarded)
            inner = guarded or contains_availability(node.iter, self.state)
            bindings.bind(node.target, node.iter, self.state, inner, iterating=True)
            self.body(node.body, inner)
            self.body(node.orelse, guarded)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.definition(node, guarded)
        elif isinstance(node, ast.Try | ast.TryStar):
            catches = bool(node.handlers)
            probe = is_probe(node)
            for statement in node.body:
                # `try: import cupy` with a fallback is a check, not a need.
                is_import = isinstance(statement, ast.Import | ast.ImportFrom)
                self.statement(statement, guarded or probe or (catches and is_import))
            for handler in node.handlers:
                self.body(handler.body, guarded)
            self.body(node.orelse, guarded)
            self.body(node.finalbody, guarded)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                self.expression(item.context_expr, guarded)
                if item.optional_vars is not None:
                    bindings.bind(item.optional_vars, item.context_expr, self.state, guarded)
            self.body(node.body, guarded)
        elif isinstance(node, ast.Assert):
            if contains_availability(node.test, self.state):
                self.hit(node, "require_gpu", guarded)
            else:
                self.expression(node.test, guarded)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                name = dotted(target)
                if name:
                    self.state.forget(name)
        elif isinstance(node, ast.Match):
            self.expression(node.subject, guarded)
            for case in node.cases:
                self.body(case.body, guarded)
        else:
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

    def expression(self, root: ast.AST, guarded: bool) -> None:
        """Walk an expression without recursion (deep expressions must not overflow)."""
        stack: list[tuple[ast.AST, bool]] = [(root, guarded)]
        state = self.state
        while stack:
            node, inner = stack.pop()
            kind = type(node)
            if kind is ast.Constant or kind is ast.Name:
                continue
            if kind is ast.Attribute:
                assert isinstance(node, ast.Attribute)
                base: ast.AST = node
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name):
                    # Only chains rooted in torch or a GPU library can hit: resolve the root
                    # before building the dotted name.
                    root_module = state.resolve(base.id).split(".", 1)[0]
                    if root_module == "torch" or root_module in GPU_LIBRARIES:
                        name = qualname(node, state)
                        rule = attribute_hit(node, name) if name else None
                        if rule:
                            self.hit(node, rule, inner)
                else:
                    stack.append((base, inner))
                continue
            if kind is ast.Call:
                assert isinstance(node, ast.Call)
                self.call(node, inner)
            elif kind is ast.IfExp:
                assert isinstance(node, ast.IfExp)
                test_kind = guard_kind(node.test, state)
                branch_guarded = inner or test_kind is GuardKind.GUARD
                stack += [(node.test, inner), (node.body, branch_guarded),
                          (node.orelse, branch_guarded)]
                continue
            elif kind is ast.BoolOp:
                assert isinstance(node, ast.BoolOp)
                later = inner
                for operand in node.values:
                    stack.append((operand, later))
                    later = later or guard_kind(operand, state) is GuardKind.GUARD
                continue
            elif kind is ast.NamedExpr:
                assert isinstance(node, ast.NamedExpr)
                bindings.bind(node.target, node.value, state, inner)
            for field in child_fields(kind):
                child: object = getattr(node, field, None)
                if type(child) is list:
                    stack.extend((item, inner) for item in child if type(item) not in LEAVES)
                elif isinstance(child, ast.AST) and type(child) not in LEAVES:
                    stack.append((child, inner))

    def call(self, node: ast.Call, guarded: bool) -> None:
        """The call rules, plus shell commands and IPython's magics."""
        for rule_node, rule in call_hits(node, self.state):
            self.hit(rule_node, rule, guarded)
        func = node.func
        if isinstance(func, ast.Attribute) and is_get_ipython(func.value):
            ipython_call_hits(self, node, func.attr, guarded)
        elif node.args and qualname(func, self.state) in SHELL_RUNNERS:
            command = command_text(node.args[0])
            if command:
                for _, rule in shell_hits(command):
                    self.hit(node, rule, guarded)
