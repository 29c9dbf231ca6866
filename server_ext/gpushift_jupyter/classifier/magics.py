"""IPython's magics and `!` commands, as the transformed cell calls them:
`get_ipython().system(...)`, `.getoutput(...)`, `.run_line_magic(...)`, `.run_cell_magic(...)`.
Python inside `%time`/`%%time`/`%%capture` is walked like any cell; shell inside `!`,
`%%bash`, `%%sh`, `%%script bash` goes through the shell rules; `%%writefile` only writes."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from gpushift_jupyter.classifier.rules import (
    PYTHON_CELL_MAGICS,
    PYTHON_LINE_MAGICS,
    SHELL_CELL_MAGICS,
    SHELL_LINE_MAGICS,
)
from gpushift_jupyter.classifier.shell import shell_hits
from gpushift_jupyter.classifier.source import ParsedCell, parse_cell

if TYPE_CHECKING:
    from gpushift_jupyter.classifier.analyzer import Walker

_MAX_DEPTH = 3  # `%%time` around `%%capture` around ... is the most anyone nests
_MAX_OPTION_WORDS = 6


def _strings(node: ast.Call) -> list[str]:
    return [
        arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ""
        for arg in node.args
    ]


def ipython_call_hits(walker: Walker, node: ast.Call, method: str, guarded: bool) -> None:
    """Walk what a `get_ipython().<method>(...)` call will run."""
    args = _strings(node)
    line = walker.line_of(node.lineno)
    if method in {"system", "getoutput"} and args:
        for _, rule in shell_hits(args[0]):
            walker.hit_line(line, rule, guarded)
    elif method == "run_line_magic" and len(args) >= 2:
        _line_magic(walker, args[0], args[1], line, guarded)
    elif method == "run_cell_magic" and len(args) >= 3:
        _cell_magic(walker, (args[0], args[1], args[2]), line, guarded)


def _line_magic(walker: Walker, name: str, text: str, line: int, guarded: bool) -> None:
    if name in PYTHON_LINE_MAGICS:
        _walk_python_line(walker, text, line, guarded)
    elif name in SHELL_LINE_MAGICS:
        for _, rule in shell_hits(text if name != "run" else f"python {text}"):
            walker.hit_line(line, rule, guarded)
    elif name == "load_ext" and "cudf.pandas" in text:
        walker.hit_line(line, "rapids.cudf_pandas", guarded)


def _cell_magic(walker: Walker, magic: tuple[str, str, str], line: int, guarded: bool) -> None:
    name, text, body = magic  # `%%name text` then the body lines
    if name in PYTHON_CELL_MAGICS:
        _walk_python_line(walker, text, line, guarded)
        if walker.depth >= _MAX_DEPTH:
            return
        parsed = parse_cell(body)
        if isinstance(parsed, ParsedCell):
            # Body line n is the user's line n after the `%%magic` line.
            nested = type(walker)(
                walker.state, walker.hits,
                lambda lineno: line + parsed.original_line(lineno), walker.depth + 1,
            )
            _walk_without_line_hints(nested, parsed.tree.body, guarded)
    elif name in SHELL_CELL_MAGICS and (name != "script" or _is_shell(text)):
        for offset, rule in shell_hits(body):
            walker.hit_line(line + 1 + offset, rule, guarded)


def _is_shell(text: str) -> bool:
    words = text.split()
    return bool(words) and words[0].rsplit("/", 1)[-1] in {"bash", "sh", "zsh"}


def _walk_python_line(walker: Walker, text: str, line: int, guarded: bool) -> None:
    """`%timeit -n 10 -r 3 x.cuda()`: drop option words until the rest parses."""
    words = text.split()
    for skip in range(min(len(words), _MAX_OPTION_WORDS) + 1):
        source = " ".join(words[skip:])
        if not source:
            return
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        nested = type(walker)(walker.state, walker.hits, lambda _: line, walker.depth + 1)
        _walk_without_line_hints(nested, tree.body, guarded)
        return


def _walk_without_line_hints(walker: Walker, body: list[ast.stmt], guarded: bool) -> None:
    # The kernel's per-line hints are for the cell's own lines, not the magic's text.
    hints = walker.state.availability_lines
    walker.state.availability_lines = None
    try:
        walker.body(body, guarded)
    finally:
        walker.state.availability_lines = hints
