"""Turn a cell's text into an `ast` tree the way IPython would run it, keeping a map from
the transformed lines back to the lines the user typed."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from IPython.core.inputtransformer2 import TransformerManager

# IPython rewrites magics and `!` commands into `get_ipython().<method>(...)` calls.
_IPYTHON_CALL = "get_ipython()."


@dataclass(frozen=True)
class ParsedCell:
    """A parsed cell. `line_map[i]` is the user's 1-based line for transformed line i+1;
    None when the cell parsed as plain Python and the lines are the user's own."""

    tree: ast.Module
    line_map: tuple[int, ...] | None
    source: str  # the text that was parsed (IPython's output when it transformed the cell)

    def original_line(self, lineno: int) -> int:
        """The user's line for a line of the parsed tree."""
        if self.line_map is None:
            return lineno
        if 1 <= lineno <= len(self.line_map):
            return self.line_map[lineno - 1]
        return self.line_map[-1] if self.line_map else 1


@dataclass(frozen=True)
class ParseFailure:
    """Why a cell is not Python, with the user's line of the error."""

    line: int
    message: str


@lru_cache(maxsize=1)
def transformer() -> TransformerManager:
    """IPython's input transformer, one per process (building it is cheap but not free,
    and it is stateless between `transform_cell` calls)."""
    return TransformerManager()  # type: ignore[no-untyped-call]


def parse_cell(code: str) -> ParsedCell | ParseFailure:
    """Parse `code` as IPython runs it.

    Plain Python goes straight to `ast.parse`: IPython's transformations leave valid Python
    unchanged (they act on magics, `!` commands, `?` help, prompts and a leading indent, none
    of which is valid Python), so this is both faster and keeps the line numbers exact
    (tests/jupyter/test_classifier_rules.py checks that claim over the whole corpus).
    """
    try:
        return ParsedCell(ast.parse(code), None, code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as plain_error:
        first_error = plain_error
    try:
        transformed = transformer().transform_cell(code)
    except Exception as error:  # IPython's transformers raise on some broken input
        return ParseFailure(_error_line(first_error), f"cannot transform: {error}")
    line_map = _align(code.splitlines(), transformed.splitlines())
    try:
        tree = ast.parse(transformed)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        parsed_line = _error_line(error)
        line = line_map[parsed_line - 1] if 0 < parsed_line <= len(line_map) else parsed_line
        return ParseFailure(line, _error_message(error))
    return ParsedCell(tree, tuple(line_map), transformed)


def _error_line(error: BaseException) -> int:
    if isinstance(error, SyntaxError) and error.lineno:
        return error.lineno
    return 1


def _error_message(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error.msg}"
    return f"{type(error).__name__}: {error}"


def _align(original: list[str], transformed: list[str]) -> list[int]:
    """Map each transformed line to the user's line.

    IPython drops leading blank lines, rewrites a magic or `!` line (with its backslash
    continuation lines) into one `get_ipython()` line, strips prompts and a common indent
    line by line, and turns a whole `%%magic` cell into one line. Everything else is kept
    line for line, so a walk over both lists recovers the mapping.
    """
    mapping: list[int] = []
    position = 0
    while position < len(original) and not original[position].strip():
        position += 1
    for line in transformed:
        if position >= len(original):
            mapping.append(len(original) if original else 1)
            continue
        mapping.append(position + 1)
        if line != original[position] and _IPYTHON_CALL in line:
            # A rewritten magic swallows the backslash-continued lines after it.
            while position < len(original) - 1 and original[position].rstrip().endswith("\\"):
                position += 1
            if line.lstrip().startswith("get_ipython().run_cell_magic("):
                position = len(original) - 1
        position += 1
    return mapping
