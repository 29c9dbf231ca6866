"""Precision and recall of the GPU-need classifier on the labelled corpus
(tests/jupyter/classifier_corpus/*.yaml, format in its README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gpushift_jupyter.classifier import KernelClassifier, Verdict

CORPUS = Path(__file__).parent / "classifier_corpus"
MIN_SCORE = 0.97


@dataclass(frozen=True)
class Labelled:
    """One corpus cell, where it came from, and its label."""

    where: str
    code: str
    needs_gpu: bool


def load_corpus() -> list[list[Labelled]]:
    """Every corpus item as the list of cells one kernel runs (one cell for a lone cell)."""
    runs: list[list[Labelled]] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for index, item in enumerate(yaml.safe_load(path.read_text())):
            cells = item.get("sequence", [item])
            note = item["note"]
            runs.append([
                Labelled(f"{path.name}#{index} {note!r} cell {position}", cell["code"],
                         bool(cell["needs_gpu"]))
                for position, cell in enumerate(cells)
            ])
    return runs


def classify_corpus() -> list[tuple[Labelled, Verdict]]:
    """Each cell with the verdict of its kernel's classifier, in run order."""
    results: list[tuple[Labelled, Verdict]] = []
    for run in load_corpus():
        classifier = KernelClassifier()
        results += [(cell, classifier.classify(cell.code)) for cell in run]
    return results


def test_corpus_is_big_and_balanced() -> None:
    cells = [cell for run in load_corpus() for cell in run]
    positives = sum(cell.needs_gpu for cell in cells)
    assert len(cells) >= 300
    assert 0.4 <= positives / len(cells) <= 0.6
    assert sum(len(run) > 1 for run in load_corpus()) >= 10  # multi-cell sequences


def test_precision_and_recall(capsys: pytest.CaptureFixture[str]) -> None:
    results = classify_corpus()
    true_pos = sum(1 for cell, verdict in results if cell.needs_gpu and verdict.needs_gpu)
    false_pos = [(c, v) for c, v in results if not c.needs_gpu and v.needs_gpu]
    false_neg = [(c, v) for c, v in results if c.needs_gpu and not v.needs_gpu]
    precision = true_pos / (true_pos + len(false_pos))
    recall = true_pos / (true_pos + len(false_neg))
    with capsys.disabled():
        print(f"\nclassifier corpus: {len(results)} cells, "
              f"{true_pos + len(false_neg)} need a GPU")
        print(f"precision {precision:.4f}  recall {recall:.4f}")
        for label, wrong in (("false positive", false_pos), ("false negative", false_neg)):
            for cell, verdict in wrong:
                rules = [(reason.line, reason.rule) for reason in verdict.reasons]
                print(f"  {label}: {cell.where} {rules}")
    assert all(
        reason.rule != "classifier_error" for _, verdict in results for reason in verdict.reasons
    )
    assert precision >= MIN_SCORE
    assert recall >= MIN_SCORE


def test_every_positive_names_a_reason_on_a_real_line() -> None:
    for cell, verdict in classify_corpus():
        lines = cell.code.splitlines()
        for reason in verdict.reasons:
            assert 1 <= reason.line <= max(len(lines), 1), (cell.where, reason)
            if reason.rule != "no_parse":
                assert reason.text == lines[reason.line - 1].strip()[:200], (cell.where, reason)
        assert verdict.needs_gpu == any(r.rule != "no_parse" for r in verdict.reasons)
