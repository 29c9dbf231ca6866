"""A cheap look at a cell's top-level statements, without parsing it, so that only the
statements worth walking are parsed.

CPython's parser costs about 8 µs a line (a 200-line cell is ~1.6 ms, most of the time a
cell may take), and IPython's input transformation tokenizes the whole cell in pure Python
(~14 ms at 200 lines) as soon as one line is a magic. `reduce_cell` finds where each
top-level statement starts (tracking strings, comments, brackets and backslash
continuations with one regex pass) and returns the cell with every line of the statements
not kept blanked, and each kept magic or `!` line replaced by IPython's own translation of
that line alone; every line stays on its own line number. Inside a kept statement, a
simple statement in a block that mentions no trigger becomes `pass` (the walker would skip
it; headers, clauses, decorators, `raise` and exits stay). When the cell looks like
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
# Inside a block, also `case` (a soft keyword: a line that only looks like one is kept).
_INNER_CLAUSE = re.compile(r"(?:else|elif|except|finally|case)(?!\w)")
# A simple statement inside a block that the walker looks at even without a trigger word:
# `raise` and the exits make `if not gpu: raise ...` a requirement and `except: raise` no
# probe (syntax.raises, syntax.is_probe). Such a line is kept as it is.
_KEPT = re.compile(r"raise|exit|quit|Exit")


@dataclass(frozen=True)
class CellLayout:
    """Where a cell's top-level statements start (0-based line indexes, in order), its
    magic lines (0-based first line -> the magic's original text, continuation included)
    and, per top-level statement, its simple statements inside blocks that a `pass` can
    stand in for (`inner`: 0-based first and last line)."""

    starts: tuple[int, ...]
    magics: dict[int, str]
    line_count: int
    inner: dict[int, list[tuple[int, int]]]

    def spans(self) -> list[tuple[int, int]]:
        """(first, last) 0-based line indexes of each top-level statement."""
        ends = [*self.starts[1:], self.line_count] if self.starts else []
        return [(start, end - 1) for start, end in zip(self.starts, ends, strict=True)]


def _stripped_lines(code: str) -> tuple[list[str], dict[int, str]] | None:
    """The cell's lines with strings as `0`, comments gone, brackets all `()`, lines that
    continue a string or a backslash line marked, and each magic as `!`; and the magics
    (0-based line -> text). None for an unterminated string or a cell magic."""
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
            return "\n" + _indent(magic) + "!" + _CONTINUED * magic.count("\n")
        return _CONTINUED  # a backslash continuation

    maybe_magic = any(pattern.search(text) for pattern in _MAYBE_MAGIC)
    scan = _SCAN_MAGIC if maybe_magic else _SCAN_PLAIN
    stripped = scan.sub(strip, text)[1:].translate(_BRACKETS)
    if "'" in stripped or '"' in stripped:
        return None  # an unterminated string: only the real parser can say what follows
    if any(text.lstrip(" \t").startswith("%%") for text in magics.values()):
        return None  # a cell magic governs the whole cell
    return stripped.split("\n"), magics


def layout(code: str) -> CellLayout | None:
    """The cell's top-level statements, or None when the scan cannot tell them apart."""
    scanned = _stripped_lines(code)
    if scanned is None:
        return None
    lines, magics = scanned
    magic_lines = set(magics)
    starts: list[int] = []
    inner: dict[int, list[tuple[int, int]]] = {}
    depth = 0
    decorating = False  # the statement so far is only decorator lines
    # The logical line being read inside a block, while a `pass` may still replace it:
    # its first line (-1: none) and its last non-blank line's text so far.
    simple = -1
    indent = ""  # that line's indent
    last_text = ""
    for index, line in enumerate(lines):
        if not line:
            continue
        first = line[0]
        if first == "\x01":
            pass
        elif depth and index in magic_lines:
            return None  # `%` or `!` at the start of a line inside brackets
        elif depth == 0:
            body = line.lstrip(" \t") if first in " \t" else line
            if not body:
                continue  # only a comment was on this line
            # A new logical line: the one before it ends here. It stays when it was a
            # block's header or this line is its clause (`if x: y` then `else: z`).
            if simple >= 0:
                if not _opens_block(last_text) and not (
                    line.startswith(indent) and _INNER_CLAUSE.match(line, len(indent))
                ):
                    inner[starts[-1]].append((simple, index - 1))
                simple = -1
            if first not in " \t":
                # (the clause regex only on lines that can start a clause: it is called
                # for most lines of a cell otherwise)
                if not starts or not (decorating or (first in "ef" and _CLAUSE.match(line))):
                    starts.append(index)
                    inner[index] = []
                    decorating = first == "@"
                elif decorating and first != "@":
                    decorating = False
            else:
                if not starts:
                    return None  # a leading indent: IPython strips it from the whole cell
                if body[0] not in "@!" and not _KEPT.search(body) and not (
                    body[0] in "efc" and _INNER_CLAUSE.match(body)
                ):
                    simple = index
                    indent = line[: len(line) - len(body)]
        if "(" in line:
            depth += line.count("(") - line.count(")")
            if depth < 0:
                return None
        elif ")" in line:
            depth -= line.count(")")
            if depth < 0:
                return None
        last_text = line
    if depth:
        return None
    if simple >= 0 and not _opens_block(last_text):
        inner[starts[-1]].append((simple, len(lines) - 1))
    return CellLayout(tuple(starts), magics, len(lines), inner)


@lru_cache(maxsize=512)
def translate_magic(text: str) -> str | None:
    """IPython's translation of one magic line (`!nvidia-smi` ->
    `get_ipython().system('nvidia-smi')`), indent kept; None when it is not one line."""
    indent = _indent(text)
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
        for inner_first, inner_last in cell.inner[first]:
            # A simple statement inside a block that mentions no trigger: the walker
            # would skip it (Walker.body), so the parser need not read it. `pass` keeps
            # its block a block and its try body as many statements long (is_probe).
            if not keep(inner_first + 1, inner_last + 1):
                reduced[inner_first] = _indent(source_lines[inner_first]) + "pass"
                reduced[inner_first + 1 : inner_last + 1] = [""] * (inner_last - inner_first)
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


def _indent(line: str) -> str:
    """The spaces and tabs a line starts with."""
    return line[: len(line) - len(line.lstrip(" \t"))]


def _opens_block(last_line: str) -> bool:
    """Whether a logical line whose last stripped line is `last_line` is a block's header
    (`for x in y:`), not a statement of its own (`if x: y`)."""
    return last_line.rstrip().endswith(":")
