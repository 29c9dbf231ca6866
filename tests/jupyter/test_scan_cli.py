"""`gpushift scan` through the real console script installed by `pip install -e server_ext`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

GPUSHIFT = Path(sys.executable).parent / "gpushift"


def notebook(cells: list[tuple[str, str]]) -> str:
    """An nbformat 4 notebook with (cell_type, source) cells; sources as line lists."""
    return json.dumps({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            {
                "cell_type": kind,
                "metadata": {},
                "source": source.splitlines(keepends=True),
                **({"outputs": [], "execution_count": None} if kind == "code" else {}),
            }
            for kind, source in cells
        ],
    })


def run_scan(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert GPUSHIFT.exists(), f"{GPUSHIFT} missing: run .venv/bin/pip install -e server_ext"
    return subprocess.run([str(GPUSHIFT), *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def training_notebook(tmp_path: Path) -> Path:
    path = tmp_path / "train.ipynb"
    path.write_text(notebook([
        ("markdown", "# Training\nRun on a GPU pod."),
        ("code", "import torch\nimport torch.nn as nn"),
        ("code", 'device = "cuda" if torch.cuda.is_available() else "cpu"'),
        ("markdown", "Now move the model."),
        ("code", "model = nn.Linear(4, 2)\nmodel.to(device)"),
        ("code", 'gpu = torch.device("cuda:0")'),
        ("code", "x = torch.ones(3)\ny = x.to(gpu)"),
        ("raw", "not code"),
        ("code", "!nvidia-smi"),
    ]))
    return path


def test_json_lists_every_code_cell_with_its_index_among_all_cells(
    training_notebook: Path,
) -> None:
    result = run_scan("scan", "--json", training_notebook)
    assert result.returncode == 0, result.stderr
    cells: list[dict[str, Any]] = json.loads(result.stdout)
    assert [(c["cell"], c["needs_gpu"]) for c in cells] == [
        (1, False), (2, False), (4, False), (5, True), (6, True), (8, True)
    ]
    assert all(c["path"] == str(training_notebook) for c in cells)
    assert cells[4]["reasons"] == [
        {"line": 2, "rule": "state.cuda_device", "text": "y = x.to(gpu)"}
    ]
    assert cells[5]["reasons"] == [{"line": 1, "rule": "shell.nvidia_smi", "text": "!nvidia-smi"}]


def test_human_output_says_which_cells_and_why(training_notebook: Path) -> None:
    result = run_scan("scan", training_notebook)
    assert result.returncode == 0, result.stderr
    assert f"{training_notebook} cell 5: needs a GPU" in result.stdout
    assert "line 1: torch.device_cuda: gpu = torch.device(\"cuda:0\")" in result.stdout
    assert f"{training_notebook} cell 4" not in result.stdout
    assert "3 of 6 code cells in 1 file(s) need a GPU" in result.stdout


def test_directory_is_searched_for_notebooks_and_py_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "sub" / "job.py").write_text("import cupy as cp\nprint(cp.ones(2))\n")
    (tmp_path / "clean.py").write_text("import pandas as pd\n")
    (tmp_path / "notes.txt").write_text("x.cuda()")
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("not even json")
    (tmp_path / "a.ipynb").write_text(notebook([("code", "x = 1")]))
    result = run_scan("scan", "--json", tmp_path)
    assert result.returncode == 0, result.stderr
    found = {(Path(c["path"]).name, c["cell"], c["needs_gpu"]) for c in json.loads(result.stdout)}
    assert found == {("a.ipynb", 0, False), ("clean.py", 0, False), ("job.py", 0, True)}


def test_py_file_is_one_cell_with_file_line_numbers(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import torch\n\n\ndef main():\n    torch.cuda.synchronize()\n")
    cells = json.loads(run_scan("scan", "--json", script).stdout)
    assert cells == [{
        "path": str(script), "cell": 0, "needs_gpu": True,
        "reasons": [{"line": 5, "rule": "torch.cuda_call", "text": "torch.cuda.synchronize()"}],
    }]


def test_cell_that_does_not_parse_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text(notebook([("code", "def f(:\n  pass"), ("code", "x.cuda()")]))
    result = run_scan("scan", path)
    assert result.returncode == 0, result.stderr
    assert "cell 0: not parsed (line 1: SyntaxError" in result.stdout
    assert "1 of 2 code cells" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a notebook: invalid JSON"),
        ('{"nbformat": 4}', "no 'cells' list"),
        ("[1, 2]", "no 'cells' list"),
    ],
)
def test_bad_notebook_exits_2_with_a_message(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    result = run_scan("scan", path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_unreadable_and_wrong_kind_exit_2(tmp_path: Path) -> None:
    missing = run_scan("scan", tmp_path / "nope.ipynb")
    assert missing.returncode == 2
    assert "no such file or directory" in missing.stderr
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"\xff\xfe\x00broken")
    unreadable = run_scan("scan", binary)
    assert unreadable.returncode == 2
    assert "cannot read" in unreadable.stderr
    other = tmp_path / "notes.txt"
    other.write_text("x")
    wrong = run_scan("scan", other)
    assert wrong.returncode == 2
    assert "not a notebook (.ipynb) or Python file (.py)" in wrong.stderr
    for result in (missing, unreadable, wrong):
        assert "Traceback" not in result.stderr


def test_bad_arguments_exit_2() -> None:
    for args in ((), ("scan",), ("frobnicate",), ("scan", "--bogus", "x.py")):
        result = run_scan(*args)
        assert result.returncode == 2, args
        assert "usage: gpushift" in result.stderr
        assert "Traceback" not in result.stderr
