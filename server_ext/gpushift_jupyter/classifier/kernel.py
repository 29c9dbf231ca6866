"""The classifier's entry points: one `KernelClassifier` per kernel, `classify_cell` for a
cell on its own."""

from __future__ import annotations

import ast
import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from gpushift_jupyter.classifier.analyzer import Walker
from gpushift_jupyter.classifier.source import ParsedCell, ParseFailure, parse_cell
from gpushift_jupyter.classifier.state import KernelState
from gpushift_jupyter.classifier.statements import reduce_cell
from gpushift_jupyter.classifier.verdict import Reason, Verdict

_LOG = logging.getLogger(__name__)
_MAX_TEXT = 200  # a reason shows its line, cut so one minified line cannot flood the UI
# A parsed tree, its line map to the user's lines, the lines worth walking, the lines with
# an availability check (None: those of the user's text), and the lower-cased text walked.
_Walk = tuple[ast.Module, Callable[[int], int], list[int], list[int] | None, str]
# Verdicts remembered per kernel: a cell run again (a user iterating on it, Run All after
# a restart) in the same kernel memory is answered by a lookup. Cells longer than
# _CACHED_TEXT characters are not kept (the cache's memory stays small).
CACHE_ENTRIES = 256
_CACHED_TEXT = 64 * 1024
# How many previews (cells a user paused on, not yet run) each kernel keeps.
PREVIEW_ENTRIES = 16
_Outcome = tuple[bool, tuple[Reason, ...], KernelState]
_Key = tuple[tuple[object, ...], str]


class KernelClassifier:
    """Classifies the cells of one kernel in the order they run, remembering what earlier
    cells bound (`device = torch.device("cuda")`, `import cupy as cp`, GPU functions)."""

    def __init__(self, *, strict: bool = True, cache_entries: int = CACHE_ENTRIES) -> None:
        """`strict` (the default, for the scan CLI): parse the whole cell, so that a syntax
        error anywhere makes it "no GPU" with a `no_parse` reason, as running it would do
        nothing. Not strict (the live path before each cell runs): parse only the top-level
        statements that mention something GPU-related or a remembered name, and answer "no
        GPU" at once for a cell with none; a syntax error in the other statements goes
        unseen. CPython parses ~8 µs a line, so only this meets the 2 ms target at 200
        lines; both give the same verdict on every cell that parses. `cache_entries`:
        how many verdicts to remember (0: none)."""
        self._state = KernelState()
        self._strict = strict
        self._cache_entries = cache_entries
        self._verdicts: OrderedDict[_Key, _Outcome] = OrderedDict()
        self._previews: OrderedDict[_Key, _Outcome] = OrderedDict()
        self._rest: _RestOfCell | None = None
        self.cache_hits = 0
        """Cells answered from the cache (for tests and the bench)."""

    def classify(self, code: str, *, first_hit: bool = False) -> Verdict:
        """Whether running `code` needs a GPU. The cell is taken to be about to run: its
        bindings are remembered for the next cells. Never raises.

        `first_hit`: answer as soon as a top-level statement is known to need a GPU (the
        reasons are that statement's), for a caller that only acts on `needs_gpu` (a move
        without asking, the GPU pod's activity report). The rest of the cell is walked by
        `settle()`, which the caller runs after sending the answer and every other call
        runs first: the kernel's memory and the remembered verdict are the whole cell's."""
        return self._answer(code, commit=True, first_hit=first_hit)

    def preview(self, code: str) -> Verdict:
        """The verdict `classify(code)` would give in the kernel's memory as it is now,
        without remembering the cell's bindings. The frontend asks while a user pauses
        typing or selects a cell, so that running it is a lookup: the walk is paid off the
        path the user waits on. The last PREVIEW_ENTRIES previews are kept apart from the
        verdicts of cells that ran (a user's typing must not push those out). Never raises."""
        return self._answer(code, commit=False)

    @property
    def settled(self) -> bool:
        """Whether no `first_hit` answer left part of its cell to walk."""
        return self._rest is None

    def settle(self) -> None:
        """Walk what a `first_hit` answer left of its cell. Never raises."""
        rest, self._rest = self._rest, None
        if rest is None:
            return
        try:
            outcome = rest.finish()
        except Exception:  # a classifier bug: forget the cell, as a failed walk does
            _LOG.exception("GPU-need classifier failed")
            self._state = rest.before
            return
        if rest.key is not None:
            _remember(self._verdicts, rest.key, outcome, self._cache_entries)

    def _answer(self, code: str, *, commit: bool, first_hit: bool = False) -> Verdict:
        started = time.perf_counter()
        self.settle()  # (normally done already, after the last answer was sent)
        try:
            needs_gpu, reasons, cached = self._classify(code, commit, first_hit)
        except Exception as error:  # a classifier bug must not block a user's cell
            _LOG.exception("GPU-need classifier failed")
            needs_gpu, reasons, cached = False, (
                Reason(1, "classifier_error", repr(error)[:_MAX_TEXT]),), False
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return Verdict(needs_gpu, reasons, elapsed_ms, cached)

    def _classify(self, code: str, commit: bool,
                  first_hit: bool) -> tuple[bool, tuple[Reason, ...], bool]:
        """(needs_gpu, reasons, answered from the cache) for `code` in the kernel memory as
        it is; with `commit`, the memory after the cell becomes the kernel's."""
        cacheable = len(code) <= _CACHED_TEXT and self._cache_entries > 0
        key = (self._state.fingerprint(), code) if cacheable else None
        known = None if key is None else self._lookup(key, commit)
        cached = known is not None
        if known is None:
            known, rest = self._classify_walk(code, first_hit)
            if rest is not None:
                # Remembered once settled; until then the state is still being walked.
                rest.key = key
                self._rest = rest
            # States are never changed in place once a walk is over (a walk works on a
            # copy): sharing is safe.
            elif key is not None:
                if commit:
                    _remember(self._verdicts, key, known, self._cache_entries)
                else:
                    _remember(self._previews, key, known, PREVIEW_ENTRIES)
        elif commit:
            self.cache_hits += 1
        needs_gpu, reasons, after = known
        if commit:
            self._state = after
        return needs_gpu, reasons, cached

    def _lookup(self, key: _Key, commit: bool) -> _Outcome | None:
        """A remembered outcome: a cell that ran in this memory before, or one previewed
        in it (moved among the verdicts when it runs)."""
        known = self._verdicts.get(key)
        if known is not None:
            self._verdicts.move_to_end(key)
            return known
        known = self._previews.get(key)
        if known is not None and commit:
            del self._previews[key]
            _remember(self._verdicts, key, known, self._cache_entries)
        return known

    def _classify_walk(self, code: str, first_hit: bool) -> tuple[_Outcome, _RestOfCell | None]:
        """(needs_gpu, reasons, the kernel's memory after the cell) by walking it; with
        `first_hit`, up to the first statement that needs a GPU, and what is left to walk
        (None when nothing is)."""
        state = self._state
        scanner = state.scanner()
        lowered = code.lower()
        trigger_lines, check_lines = scanner.lines(lowered)
        if not trigger_lines and not self._strict:
            # Nothing GPU-related and no remembered name: no rule can hit and no binding
            # the kernel remembers can change (a remembered name is itself a trigger).
            return (False, (), state), None
        walk = self._reduced_walk(code, lowered, trigger_lines) or self._full_walk(code)
        if isinstance(walk, ParseFailure):
            return (False, (Reason(walk.line, "no_parse", walk.message),), state), None
        tree, line_of, walk_lines, walk_checks, walked_text = walk
        if not walk_lines:
            return (False, (), state), None
        # Walk a copy, so a cell that trips the classifier leaves the kernel's memory as it was.
        working = state.copy()
        working.availability_lines = walk_checks if walk_checks is not None else check_lines
        working.walked_text = walked_text
        hits: list[tuple[int, str]] = []
        walker = Walker(working, hits, line_of, trigger_lines=walk_lines)
        rest = _RestOfCell(code, walker, tree.body, state)
        if first_hit and rest.walk_to_first_hit():
            return (True, _reasons(code, hits), working), rest
        return rest.finish(), None

    def _reduced_walk(self, code: str, lowered: str, trigger_lines: list[int]) -> _Walk | None:
        """Parse only the top-level statements that mention a trigger (all of them when
        strict), magics translated line by line (see statements.py); None when the cheap
        split is unsure or the reduced text does not parse."""
        strict = self._strict
        if strict:
            # Valid Python is what IPython would run unchanged: no split needed.
            try:
                return ast.parse(code), _same_line, trigger_lines, None, lowered
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass

        def keep(first: int, last: int) -> bool:
            if strict:
                return True
            index = bisect.bisect_left(trigger_lines, first)
            return index < len(trigger_lines) and trigger_lines[index] <= last

        reduced = reduce_cell(code, keep)
        if reduced is None:
            return None
        text, magic_lines = reduced
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None  # the full parse reports the error on the user's line
        # A translated magic line calls `get_ipython()`, itself a trigger.
        lines = sorted({*trigger_lines, *magic_lines}) if magic_lines else trigger_lines
        return tree, _same_line, lines, None, lowered

    def _full_walk(self, code: str) -> _Walk | ParseFailure:
        """Parse the whole cell as IPython runs it (the reference path)."""
        parsed = parse_cell(code)
        if not isinstance(parsed, ParsedCell):
            return parsed
        lowered = parsed.source.lower()
        trigger_lines, check_lines = self._state.scanner().lines(lowered)
        return parsed.tree, parsed.original_line, trigger_lines, check_lines, lowered


class _RestOfCell:
    """The statements of a cell not walked yet, with the walker (and the kernel memory it
    works on) that walks them: all of them, or what a `first_hit` answer left."""

    def __init__(self, code: str, walker: Walker, statements: list[ast.stmt],
                 before: KernelState) -> None:
        self.code = code
        self.walker = walker
        self.statements = statements
        self.before = before
        """The kernel's memory before the cell (kept if the rest of the walk fails)."""
        self.key: _Key | None = None
        """Where the whole cell's outcome is remembered (None: not cacheable)."""

    def walk_to_first_hit(self) -> bool:
        """Walk up to the first statement that needs a GPU; whether any is left after it."""
        walked = self.walker.body(self.statements, guarded=False, stop_at_hit=True)
        self.statements = self.statements[walked:]
        return bool(self.statements)

    def finish(self) -> _Outcome:
        """Walk the rest; the whole cell's outcome."""
        walker = self.walker
        walker.body(self.statements, guarded=False)
        walker.state.end_walk()
        return bool(walker.hits), _reasons(self.code, walker.hits), walker.state


def _remember(outcomes: OrderedDict[_Key, _Outcome], key: _Key, outcome: _Outcome,
              entries: int) -> None:
    outcomes[key] = outcome
    if len(outcomes) > entries:
        outcomes.popitem(last=False)


def _same_line(line: int) -> int:
    return line


def _reasons(code: str, hits: list[tuple[int, str]]) -> tuple[Reason, ...]:
    lines = code.splitlines()
    reasons: list[Reason] = []
    seen: set[tuple[int, str]] = set()
    for line, rule in sorted(hits):
        if (line, rule) not in seen:
            seen.add((line, rule))
            text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            reasons.append(Reason(line, rule, text[:_MAX_TEXT]))
    return tuple(reasons)


def classify_cell(code: str) -> Verdict:
    """Classify one cell with no memory of other cells."""
    return KernelClassifier().classify(code)
