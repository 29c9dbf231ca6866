"""The classifier's entry points: one `KernelClassifier` per kernel, `classify_cell` for a
cell on its own."""

from __future__ import annotations

import logging
import time

from gpushift_jupyter.classifier.analyzer import Walker
from gpushift_jupyter.classifier.source import ParsedCell, parse_cell
from gpushift_jupyter.classifier.state import KernelState
from gpushift_jupyter.classifier.verdict import Reason, Verdict

_LOG = logging.getLogger(__name__)
_MAX_TEXT = 200  # a reason shows its line, cut so one minified line cannot flood the UI


class KernelClassifier:
    """Classifies the cells of one kernel in the order they run, remembering what earlier
    cells bound (`device = torch.device("cuda")`, `import cupy as cp`, GPU functions)."""

    def __init__(self) -> None:
        self._state = KernelState()

    def classify(self, code: str) -> Verdict:
        """Whether running `code` needs a GPU. The cell is taken to be about to run: its
        bindings are remembered for the next cells. Never raises."""
        started = time.perf_counter()
        try:
            needs_gpu, reasons = self._classify(code)
        except Exception as error:  # a classifier bug must not block a user's cell
            _LOG.exception("GPU-need classifier failed")
            needs_gpu, reasons = False, (Reason(1, "classifier_error", repr(error)[:_MAX_TEXT]),)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return Verdict(needs_gpu, reasons, elapsed_ms)

    def _classify(self, code: str) -> tuple[bool, tuple[Reason, ...]]:
        state = self._state
        scanner = state.scanner()
        parsed = parse_cell(code)
        if not isinstance(parsed, ParsedCell):
            return False, (Reason(parsed.line, "no_parse", parsed.message),)
        trigger_lines, check_lines = scanner.lines(parsed.source.lower())
        if not trigger_lines:
            return False, ()  # nothing GPU-related and no remembered name in this cell
        # Walk a copy, so a cell that trips the classifier leaves the kernel's memory as it was.
        working = state.copy()
        working.availability_lines = check_lines
        hits: list[tuple[int, str]] = []
        walker = Walker(working, hits, parsed.original_line, trigger_lines=trigger_lines)
        walker.body(parsed.tree.body, guarded=False)
        working.availability_lines = None
        self._state = working
        lines = code.splitlines()
        reasons: list[Reason] = []
        seen: set[tuple[int, str]] = set()
        for line, rule in sorted(hits):
            if (line, rule) not in seen:
                seen.add((line, rule))
                text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
                reasons.append(Reason(line, rule, text[:_MAX_TEXT]))
        return bool(reasons), tuple(reasons)


def classify_cell(code: str) -> Verdict:
    """Classify one cell with no memory of other cells."""
    return KernelClassifier().classify(code)
