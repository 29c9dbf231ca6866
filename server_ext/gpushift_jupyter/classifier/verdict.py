"""The classifier's answer: whether a cell needs a GPU, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reason:
    """One hit: `line` is 1-based in the cell as the user typed it (before IPython's
    input transformation), `rule` a short stable identifier, `text` that line's source."""

    line: int
    rule: str
    text: str

    def to_json(self) -> dict[str, Any]:
        """The reason as a JSON-ready dict."""
        return {"line": self.line, "rule": self.rule, "text": self.text}


@dataclass(frozen=True)
class Verdict:
    """Whether running a cell needs a GPU. A cell that does not need one may still carry
    reasons (rule `no_parse` for a cell that is not Python even after IPython's
    transformation, `classifier_error` if the classifier itself failed). `cached`: answered
    from the kernel's remembered verdicts (the cell ran or was previewed in this same
    kernel memory before) rather than by walking it."""

    needs_gpu: bool
    reasons: tuple[Reason, ...]
    elapsed_ms: float
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        """`{"needs_gpu", "reasons": [{"line", "rule", "text"}], "elapsed_ms", "cached"}`."""
        return {
            "needs_gpu": self.needs_gpu,
            "reasons": [reason.to_json() for reason in self.reasons],
            "elapsed_ms": self.elapsed_ms,
            "cached": self.cached,
        }
