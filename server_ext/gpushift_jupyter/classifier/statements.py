"""A cheap look at a cell's top-level statements, without parsing it, so that only the
statements worth walking are parsed.

CPython's parser costs about 8 µs a line (a 200-line cell is ~1.6 ms, most of the time a
cell may take), and IPython's input transformation tokenizes the whole cell in pure Python
(~14 ms at 200 lines) as soon as one line is a magic. `reduce_cell` finds where each
top-level statement starts (tracking strings, comments, brackets and backslash
continuations with one regex pass) and returns the cell with every line of the statements
not kept blanked, and each kept magic or `!` line replaced by IPython's own translation of
that line alone; every line stays on its own line number. When the cell looks like
something this scan does not follow (a leading indent, a cell magic, an unterminated
string, unbalanced brackets, a magic inside brackets) it returns None and the caller parses
the whole cell the slow, exact way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from gpushift_jupyter.classifier.source import transformer

_STRINGS_AND_COMMENTS = (
    r'''(?P<string>"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""'''
    r"""|'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''"""
    r'''|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'''
    r"""|'[^'\\\n]*(?:\\.[^'\\\n]*)*')"""
    r"|(?P<comment>\#[^\n]*)"
    r"|(?P<continuation>\\\n)"
)
# `!cmd`, `%magic`, `out = !cmd`, `x, y = %magic` at the start of a line (matched with the
# newline before it; the scan runs over "\n" + cell), with the backslash-continued lines
# after it (IPython reads those as one command).
_MAGIC = (
    r"\n[ \t]*(?:[!%]|[A-Za-z_][\w.]*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)*[ \t]*=[ \t]*[!%])"
    r"[^\n]*(?:(?<=\\)\n[^\n]*)*"
)
# The lookaheads let `re` skip to the next quote, `#`, backslash (or newline) instead of
# trying every branch at every character (3x faster). Without a magic-looking line in the
# cell (most cells) the scan need not stop at newlines.
_SCAN_PLAIN = re.compile(r"(?=[\"'#\\])(?:" + _STRINGS_AND_COMMENTS + ")", re.DOTALL)
_SCAN_MAGIC = re.compile(
    r"(?=[\"'#\\\n])(?:" + _STRINGS_AND_COMMENTS + f"|(?P<magic>{_MAGIC}))", re.DOTALL
)
_MAYBE_MAGIC = (re.compile(r"\n[ \t]*[!%]"), re.compile(r"=[ \t]*[!%]"))
_CONTINUED = "\n\x01"  # marks a line that continues a string or a backslash line
_BRACKETS = str.maketrans("[{]}", "(())")
# Lines that continue the statement above them at the same indent.
_CLAUSE = re.compile(r"(?:else|elif|except|finally)(?!\w)")


@dataclass(frozen=True)
class CellLayout:
    """Where a cell's top-level statements start (0-based line indexes, in order) and its
    magic lines (0-based first line -> the magic's original text, continuation included)."""

    starts: tuple[int, ...]
    magics: dict[int, str]
    line_count: int

    def spans(self) -> list[tuple[int, int]]:
        """(first, last) 0-based line indexes of each top-level statement."""
        ends = [*self.starts[1:], self.line_count] if self.starts else []
        return [(start, end - 1) for start, end in zip(self.starts, ends, strict=True)]


def layout(code: str) -> CellLayout | None:
    """The cell's top-level statements, or None when the scan cannot tell them apart."""
    magics: dict[int, str] = {}
    text = "\n" + code  # so that a magic on the first line also follows a newline

    def strip(match: re.Match[str]) -> str:
        found = match.group()
        kind = match.lastgroup
        if kind == "string":  # the most common, tested first
            return "0" + _CONTINUED * found.count("\n") if "\n" in found else "0"
        if kind == "comment":
            return ""
        if kind == "magic":
            magic = found[1:]
            magics[text.count("\n", 0, match.start())] = magic
            indent = magic[: len(magic) - len(magic.lstrip(" \t"))]
            return "\n" + indent + "!" + _CONTINUED * magic.count("\n")
        return _CONTINUED  # a backslash continuation

    maybe_magic = any(pattern.search(text) for pattern in _MAYBE_MAGIC)
    scan = _SCAN_MAGIC if maybe_magic else _SCAN_PLAIN
    stripped = scan.sub(strip, text)[1:].translate(_BRACKETS)
    if "'" in stripped or '"' in stripped:
        return None  # an unterminated string: only the real parser can say what follows
    if any(text.lstrip(" \t").startswith("%%") for text in magics.values()):
        return None  # a cell magic governs the whole cell
    lines = stripped.split("\n")
    magic_lines = set(magics)
    starts: list[int] = []
    depth = 0
    decorating = False  # the statement so far is only decorator lines
    for index, line in enumerate(lines):
        if not line:
            continue
        first = line[0]
        if first == "\x01":
            pass
        elif depth and index in magic_lines:
            return None  # `%` or `!` at the start of a line inside brackets
        elif depth == 0 and first not in " \t":
            # (the clause regex only on lines that can start a clause: it is called for
            # most lines of a cell otherwise)
            if not starts or not (decorating or (first in "ef" and _CLAUSE.match(line))):
                starts.append(index)
                decorating = first == "@"
            elif decorating and first != "@":
                decorating = False
        elif not starts and line.strip():
            return None  # a leading indent: IPython strips it from the whole cell
        if "(" in line:
            depth += line.count("(") - line.count(")")
            if depth < 0:
                return None
        elif ")" in line:
            depth -= line.count(")")
            if depth < 0:
                return None
    if depth:
        return None
    return CellLayout(tuple(starts), magics, len(lines))


@lru_cache(maxsize=512)
def translate_magic(text: str) -> str | None:
    """IPython's translation of one magic line (`!nvidia-smi` ->
    `get_ipython().system('nvidia-smi')`), indent kept; None when it is not one line."""
    indent = text[: len(text) - len(text.lstrip(" \t"))]
    try:
        translated = transformer().transform_cell(text.strip(" \t"))
    except Exception:  # IPython's transformers raise on some broken input
        return None
    translated = translated.strip("\n")
    if "\n" in translated or "get_ipython()" not in translated:
        return None
    return indent + translated


def reduce_cell(
    code: str, keep: Callable[[int, int], bool]
) -> tuple[str, list[int]] | None:
    """The cell with only the top-level statements for which `keep(first, last)` (1-based
    user lines) is true, the others blanked and kept magics translated, on the same line
    numbers; and the 1-based lines of the kept magics. None: parse the whole cell."""
    cell = layout(code)
    if cell is None:
        return None
    source_lines = code.split("\n")
    reduced = [""] * len(source_lines)
    magic_lines: list[int] = []
    magics = cell.magics
    for first, last in cell.spans():
        if not keep(first + 1, last + 1):
            continue
        reduced[first : last + 1] = source_lines[first : last + 1]
        if not magics:
            continue  # most cells: no line to translate
        for index in range(first, last + 1):
            magic = magics.get(index)
            if magic is None:
                continue
            translated = translate_magic(magic)
            if translated is None:
                return None
            reduced[index] = translated
            for extra in range(index + 1, index + 1 + magic.count("\n")):
                reduced[extra] = ""
            magic_lines.append(index + 1)
    return "\n".join(reduced), magic_lines
