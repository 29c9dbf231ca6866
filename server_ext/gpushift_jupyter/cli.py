"""`gpushift` command line for admins: `gpushift scan [--json] PATH...` tells which cells of
notebooks (and which .py files) need a GPU, and why."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter.classifier import KernelClassifier, Verdict

_SUFFIXES = (".ipynb", ".py")
_SKIPPED_DIRS = frozenset({".ipynb_checkpoints", ".git", "__pycache__", ".venv", "node_modules"})


class ScanError(Exception):
    """A path that cannot be scanned: missing, unreadable, or not a notebook."""


@dataclass(frozen=True)
class CellResult:
    """One code cell's verdict; `cell` is the index among all cells of its notebook."""

    path: str
    cell: int
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        """The `--json` object of one code cell."""
        return {
            "path": self.path,
            "cell": self.cell,
            "needs_gpu": self.verdict.needs_gpu,
            "reasons": [reason.to_json() for reason in self.verdict.reasons],
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpushift", description="gpushift notebook tools")
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser(
        "scan",
        help="tell which notebook cells (and .py files) need a GPU, and why",
        description="Classify the code cells of notebooks (.ipynb, one kernel per notebook, "
        "cells in order) and .py files (one cell each). Directories are searched recursively "
        "for *.ipynb and *.py, skipping .ipynb_checkpoints and hidden folders.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="notebook, .py file or folder")
    scan.add_argument("--json", action="store_true", help="print one JSON list of code cells")
    return parser


def _expand(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.iterdir()):
            hidden = child.name.startswith(".") or child.name in _SKIPPED_DIRS
            if child.is_dir() and not hidden:
                yield from _expand(child)
            elif child.is_file() and child.suffix in _SUFFIXES and not hidden:
                yield child
    elif path.is_file():
        yield path
    else:
        raise ScanError(f"{path}: no such file or directory")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScanError(f"{path}: cannot read: {error}") from error


def _notebook_cells(path: Path) -> list[tuple[int, str]]:
    """(index among all cells, source) of each code cell, in order."""
    try:
        notebook = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ScanError(f"{path}: not a notebook: invalid JSON ({error})") from error
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise ScanError(f"{path}: not a notebook: no 'cells' list (nbformat 4 expected)")
    code_cells: list[tuple[int, str]] = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        if not isinstance(text, str):
            raise ScanError(f"{path}: cell {index} has a source that is not text")
        code_cells.append((index, text))
    return code_cells


def scan_file(path: Path) -> list[CellResult]:
    """Classify one notebook (one kernel, cells in order) or one .py file (one cell)."""
    classifier = KernelClassifier()
    cells = _notebook_cells(path) if path.suffix == ".ipynb" else [(0, _read_text(path))]
    return [CellResult(str(path), index, classifier.classify(code)) for index, code in cells]


def scan(paths: Sequence[str]) -> list[CellResult]:
    """Classify everything under `paths`; raises ScanError on the first bad path."""
    files = [file for path in paths for file in _expand(Path(path))]
    for file in files:
        if file.suffix not in _SUFFIXES:
            raise ScanError(f"{file}: not a notebook (.ipynb) or Python file (.py)")
    return [result for file in files for result in scan_file(file)]


def _print_human(results: list[CellResult]) -> None:
    needing = [result for result in results if result.verdict.needs_gpu]
    files = len({result.path for result in results})
    for result in needing:
        where = result.path if result.path.endswith(".py") else f"{result.path} cell {result.cell}"
        print(f"{where}: needs a GPU")
        for reason in result.verdict.reasons:
            print(f"    line {reason.line}: {reason.rule}: {reason.text}")
    for result in results:
        for reason in result.verdict.reasons:
            if reason.rule == "no_parse":
                print(f"{result.path} cell {result.cell}: not parsed "
                      f"(line {reason.line}: {reason.text})")
    print(f"{len(needing)} of {len(results)} code cells in {files} file(s) need a GPU")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gpushift` console script. Exit 0 on success, 2 on bad arguments
    or a path that cannot be read (message on stderr)."""
    args = _parser().parse_args(argv)  # argparse exits with 2 and a usage message itself
    try:
        results = scan(args.paths)
    except ScanError as error:
        print(f"gpushift scan: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        json.dump([result.to_json() for result in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_human(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
